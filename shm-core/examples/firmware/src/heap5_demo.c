/*
 * C code of the example firmware using the FreeRTOS heap_5 API (shm-heap5) as a FreeRTOS
 * application would: two banks of RAM defined with vPortDefineHeapRegions, blocks taken
 * with pvPortMalloc until it returns NULL, the malloc-failed hook, the statistics.
 * Built by build.rs with arm-none-eabi-gcc -Wall -Wextra -Werror; src/heap5_c.rs calls
 * heap5_demo() and prints its results in the "firmware ok:" line.
 */
#include <stddef.h>
#include <stdint.h>

#include "heap5.h"

#define ALIGNMENT 8u /* portBYTE_ALIGNMENT on Cortex-M */
#define BLOCK 256u   /* bytes per block in the exhaustion runs */
#define MAX_BLOCKS 128u

/* What heap5_demo reports (the same layout as HeapDemo in src/heap5_c.rs). */
struct heap5_demo {
    uint32_t regions;       /* regions given to vPortDefineHeapRegions */
    uint32_t blocks;        /* BLOCK-byte blocks pvPortMalloc gave before NULL */
    uint32_t regions_used;  /* bit i: some block came from region i */
    uint32_t hook_calls;    /* vApplicationMallocFailedHook calls */
    uint32_t free_bytes;    /* xPortGetFreeHeapSize() after each run */
    uint32_t lowest_free;   /* xPortGetMinimumEverFreeHeapSize() after the runs */
    uint32_t allocations;   /* xNumberOfSuccessfulAllocations at the end */
    uint32_t frees;         /* xNumberOfSuccessfulFrees at the end */
};

static uint8_t bank_a[12 * 1024] __attribute__((aligned(16)));
static uint8_t bank_b[6 * 1024] __attribute__((aligned(16)));

static volatile uint32_t hook_calls;

void vApplicationMallocFailedHook(void)
{
    hook_calls++;
}

/* Fails heap5_demo with the line number of the check. */
#define CHECK(cond)           \
    do {                      \
        if (!(cond)) {        \
            return __LINE__;  \
        }                     \
    } while (0)

static int in_bank(const void *p, const uint8_t *bank, size_t len)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)bank;
    return a >= b && a < b + len;
}

/* Takes BLOCK-byte blocks until pvPortMalloc returns NULL, checks that none overlaps
 * another, frees them all. */
static int exhaust(struct heap5_demo *out)
{
    static uint8_t *block[MAX_BLOCKS];
    uint32_t n = 0;
    uint32_t hooks = hook_calls;
    while (n < MAX_BLOCKS && (block[n] = pvPortMalloc(BLOCK)) != NULL) {
        CHECK((uintptr_t)block[n] % ALIGNMENT == 0);
        if (in_bank(block[n], bank_a, sizeof bank_a)) {
            out->regions_used |= 1u << ((uintptr_t)bank_a > (uintptr_t)bank_b);
        } else {
            CHECK(in_bank(block[n], bank_b, sizeof bank_b));
            out->regions_used |= 1u << ((uintptr_t)bank_b > (uintptr_t)bank_a);
        }
        for (uint32_t i = 0; i < BLOCK; i++) {
            block[n][i] = (uint8_t)(n + i);
        }
        n++;
    }
    CHECK(n < MAX_BLOCKS);          /* it ended on NULL */
    CHECK(hook_calls == hooks + 1); /* which called the hook */
    CHECK(xPortGetMinimumEverFreeHeapSize() <= xPortGetFreeHeapSize());
    for (uint32_t k = 0; k < n; k++) {
        for (uint32_t i = 0; i < BLOCK; i++) {
            CHECK(block[k][i] == (uint8_t)(k + i));
        }
        vPortFree(block[k]);
    }
    CHECK(out->blocks == 0 || out->blocks == n);
    out->blocks = n;
    return 0;
}

/* Runs the demonstration; returns 0, or the line of the first failed check. */
int heap5_demo(struct heap5_demo *out)
{
    *out = (struct heap5_demo){ 0 };
    CHECK(pvPortMalloc(16) == NULL); /* no regions yet */

    /* Regions in increasing address order (the linker placed the banks). */
    HeapRegion_t regions[3] = { { bank_a, sizeof bank_a }, { bank_b, sizeof bank_b }, { NULL, 0 } };
    if ((uintptr_t)bank_b < (uintptr_t)bank_a) {
        regions[0] = (HeapRegion_t){ bank_b, sizeof bank_b };
        regions[1] = (HeapRegion_t){ bank_a, sizeof bank_a };
    }
    vPortDefineHeapRegions(regions);
    out->regions = 2;
    HeapStats_t stats;
    vPortGetHeapStats(&stats);
    CHECK(stats.xNumberOfFreeBlocks == 2);

    /* The first run also grows the heap's owner table to the number of blocks; the
     * second then finds the same room and leaves the same free bytes. */
    int failed = exhaust(out);
    if (failed != 0) {
        return failed;
    }
    size_t after_first = xPortGetFreeHeapSize();
    failed = exhaust(out);
    if (failed != 0) {
        return failed;
    }
    CHECK(xPortGetFreeHeapSize() == after_first);
    out->free_bytes = (uint32_t)after_first;
    out->lowest_free = (uint32_t)xPortGetMinimumEverFreeHeapSize();
    CHECK(out->lowest_free < after_first);
    xPortResetHeapMinimumEverFreeHeapSize();
    CHECK(xPortGetMinimumEverFreeHeapSize() == after_first);

    /* pvPortCalloc zeroes what an earlier block left behind. */
    uint32_t *zeroed = pvPortCalloc(BLOCK / 4, 4);
    CHECK(zeroed != NULL);
    for (uint32_t i = 0; i < BLOCK / 4; i++) {
        CHECK(zeroed[i] == 0);
    }
    vPortFree(zeroed);

    vPortGetHeapStats(&stats);
    CHECK(stats.xAvailableHeapSpaceInBytes == after_first);
    CHECK(stats.xNumberOfSuccessfulAllocations == stats.xNumberOfSuccessfulFrees);
    out->allocations = (uint32_t)stats.xNumberOfSuccessfulAllocations;
    out->frees = (uint32_t)stats.xNumberOfSuccessfulFrees;
    out->hook_calls = hook_calls;
    return 0;
}
