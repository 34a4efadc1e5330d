/*
 * Link check for a C-only FreeRTOS build: libshm_heap5.a built for thumbv7em-none-eabihf
 * with the features freertos-critical-section and malloc-failed-hook needs exactly what a
 * FreeRTOS application has (vTaskSuspendAll, xTaskResumeAll, vApplicationMallocFailedHook),
 * stubbed here. .ci/run links it with arm-none-eabi-gcc; it is not run.
 */
#include "heap5.h"

static volatile long suspended;

void vTaskSuspendAll(void);
long xTaskResumeAll(void);

void vTaskSuspendAll(void)
{
    suspended++;
}

long xTaskResumeAll(void)
{
    suspended--;
    return 0;
}

void vApplicationMallocFailedHook(void)
{
}

static uint8_t ram[8192] __attribute__((aligned(16)));

int main(void)
{
    HeapRegion_t regions[] = { { ram, sizeof ram }, { NULL, 0 } };
    vPortDefineHeapRegions(regions);
    void *p = pvPortMalloc(10);
    HeapStats_t stats;
    vPortGetHeapStats(&stats);
    vPortFree(p);
    xPortResetHeapMinimumEverFreeHeapSize();
    return p == NULL || suspended != 0 || xPortGetFreeHeapSize() == 0 ||
           xPortGetMinimumEverFreeHeapSize() == 0;
}
