#include <stdio.h>

#include "heap5.h" /* or FreeRTOS.h, whose portable.h declares the same */

/* Two separate banks of RAM (on a board, e.g. SRAM1 and SRAM2). */
static uint8_t sram1[16 * 1024];
static uint8_t sram2[8 * 1024];

int main(void)
{
    /* In increasing address order, ended by { NULL, 0 }, as heap_5 requires. */
    HeapRegion_t regions[3] = { { sram1, sizeof sram1 }, { sram2, sizeof sram2 }, { NULL, 0 } };
    if ((uintptr_t)sram2 < (uintptr_t)sram1) { /* here the linker chose the order */
        regions[0] = (HeapRegion_t){ sram2, sizeof sram2 };
        regions[1] = (HeapRegion_t){ sram1, sizeof sram1 };
    }
    vPortDefineHeapRegions(regions);

    char *text = pvPortMalloc(32); /* aligned to portBYTE_ALIGNMENT; NULL if no room */
    if (text == NULL) {
        return 1;
    }
    snprintf(text, 32, "hello from heap_5");

    HeapStats_t stats;
    vPortGetHeapStats(&stats);
    printf("%s: %zu bytes free in %zu blocks, %zu allocation\n", text,
           stats.xAvailableHeapSpaceInBytes, stats.xNumberOfFreeBlocks,
           stats.xNumberOfSuccessfulAllocations);
    vPortFree(text);
    return 0;
}
