/*
 * The heap_5 API of libshm_heap5.a, checked from C on the host. Built with
 * gcc -Wall -Wextra -Werror against the library built with the malloc-failed-hook feature
 * (tests/c_suite.rs). Prints "heap5 C tests passed: N checks" and exits 0, or names the
 * first failed check and exits 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heap5.h"

#define ALIGNMENT 8u /* portBYTE_ALIGNMENT of a default build */

static unsigned checks;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        checks++;                                                                      \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static unsigned hook_calls;

void vApplicationMallocFailedHook(void)
{
    hook_calls++;
}

/* The heap's RAM: three regions cut from one array, with gaps between them (so they are
 * in increasing address order and not contiguous) and starts that are not aligned. */
#define RAM_BYTES (96u * 1024u)
static uint8_t ram[RAM_BYTES] __attribute__((aligned(64)));

#define R0_AT 5u
#define R0_LEN (32u * 1024u)
#define R1_AT (40u * 1024u + 3u)
#define R1_LEN (16u * 1024u)
#define R2_AT (64u * 1024u)
#define R2_LEN (24u * 1024u)

static const HeapRegion_t regions[] = {
    { ram + R0_AT, R0_LEN },
    { ram + R1_AT, R1_LEN },
    { ram + R2_AT, R2_LEN },
    { NULL, 0 },
};

static int in_region(const void *p, size_t at, size_t len)
{
    const uint8_t *b = p;
    return b >= ram + at && b < ram + at + len;
}

static HeapStats_t stats(void)
{
    HeapStats_t s;
    memset(&s, 0xA5, sizeof s);
    vPortGetHeapStats(&s);
    return s;
}

static void before_the_regions_are_defined_everything_fails_softly(void)
{
    unsigned hooks = hook_calls;
    CHECK(pvPortMalloc(16) == NULL);
    CHECK(hook_calls == hooks + 1);
    CHECK(xPortGetFreeHeapSize() == 0);
    CHECK(xPortGetMinimumEverFreeHeapSize() == 0);
    HeapStats_t s = stats();
    CHECK(s.xAvailableHeapSpaceInBytes == 0 && s.xNumberOfFreeBlocks == 0);
    CHECK(s.xNumberOfSuccessfulAllocations == 0 && s.xNumberOfSuccessfulFrees == 0);
    vPortFree(NULL);
    xPortResetHeapMinimumEverFreeHeapSize();
}

static void defined_regions_start_as_one_free_block_each(void)
{
    vPortDefineHeapRegions(regions);
    HeapStats_t s = stats();
    CHECK(s.xNumberOfFreeBlocks == 3);
    CHECK(s.xAvailableHeapSpaceInBytes == xPortGetFreeHeapSize());
    /* All of regions 1 and 2 but their alignment, end markers and headers, plus region 0
     * less the heap's own header. */
    CHECK(s.xAvailableHeapSpaceInBytes > R1_LEN + R2_LEN);
    CHECK(s.xAvailableHeapSpaceInBytes < R0_LEN + R1_LEN + R2_LEN);
    /* The heap's header, process table and process record (and the regions' alignment
     * and end markers) take under 5 KiB. */
    CHECK(s.xAvailableHeapSpaceInBytes + 5 * 1024 > R0_LEN + R1_LEN + R2_LEN);
    CHECK(s.xMinimumEverFreeBytesRemaining == s.xAvailableHeapSpaceInBytes);
    CHECK(s.xSizeOfSmallestFreeBlockInBytes <= s.xSizeOfLargestFreeBlockInBytes);
    CHECK(s.xSizeOfLargestFreeBlockInBytes > R1_LEN - 64);
    CHECK(s.xNumberOfSuccessfulAllocations == 0 && s.xNumberOfSuccessfulFrees == 0);
}

/* Every live block has an 8-byte cell in the heap's owner table, which grows (doubling)
 * to the most blocks live at once and does not shrink: the free bytes do not come all the
 * way back after the first time that many blocks were live. Grow it here to OWNED blocks,
 * more than any later test keeps at once, so that later tests can compare exactly. */
#define OWNED 256u

static void the_owner_table_grows_once_and_stays(void)
{
    static void *p[OWNED];
    size_t free0 = xPortGetFreeHeapSize();
    for (size_t round = 0; round < 2; round++) {
        for (size_t i = 0; i < OWNED; i++) {
            p[i] = pvPortMalloc(8);
            CHECK(p[i] != NULL);
        }
        for (size_t i = 0; i < OWNED; i++) {
            vPortFree(p[i]);
        }
        size_t grown = xPortGetFreeHeapSize();
        if (round == 0) {
            CHECK(grown + OWNED * 4 <= free0);
            CHECK(grown + 2 * OWNED * 8 + 512 > free0);
        } else {
            CHECK(grown == free0);
        }
        free0 = grown;
    }
}

static void blocks_are_aligned_and_counted(void)
{
    size_t free0 = xPortGetFreeHeapSize();
    HeapStats_t s0 = stats();
    void *p[64];
    for (size_t i = 0; i < 64; i++) {
        p[i] = pvPortMalloc(i + 1);
        CHECK(p[i] != NULL);
        CHECK((uintptr_t)p[i] % ALIGNMENT == 0);
        memset(p[i], (int)i, i + 1);
    }
    /* Each block takes at least its size plus a header from the free bytes. */
    CHECK(xPortGetFreeHeapSize() + 64 * (64 + 1) / 2 + 64 * ALIGNMENT <= free0);
    for (size_t i = 0; i < 64; i++) {
        const uint8_t *b = p[i];
        for (size_t j = 0; j <= i; j++) {
            CHECK(b[j] == (uint8_t)i);
        }
    }
    HeapStats_t s = stats();
    CHECK(s.xNumberOfSuccessfulAllocations == s0.xNumberOfSuccessfulAllocations + 64);
    for (size_t i = 0; i < 64; i++) {
        vPortFree(p[i]);
    }
    s = stats();
    CHECK(s.xNumberOfSuccessfulFrees == s0.xNumberOfSuccessfulFrees + 64);
    CHECK(xPortGetFreeHeapSize() == free0);
    CHECK(s.xNumberOfFreeBlocks == s0.xNumberOfFreeBlocks);
}

static void exhaustion_uses_every_region_then_returns_null_and_calls_the_hook(void)
{
    enum { MAX = 120, SIZE = 1000 };
    static void *p[MAX];
    size_t free0 = xPortGetFreeHeapSize();
    HeapStats_t s0 = stats();
    unsigned hooks = hook_calls;
    size_t n = 0;
    int seen[3] = { 0, 0, 0 };
    while (n < MAX) {
        void *b = pvPortMalloc(SIZE);
        if (b == NULL) {
            break;
        }
        seen[0] |= in_region(b, R0_AT, R0_LEN);
        seen[1] |= in_region(b, R1_AT, R1_LEN);
        seen[2] |= in_region(b, R2_AT, R2_LEN);
        CHECK(in_region(b, R0_AT, R0_LEN) || in_region(b, R1_AT, R1_LEN) ||
              in_region(b, R2_AT, R2_LEN));
        memset(b, (int)n, SIZE);
        p[n++] = b;
    }
    CHECK(n < MAX); /* the loop ended on NULL */
    CHECK(n > (R1_LEN + R2_LEN) / SIZE);
    CHECK(seen[0] && seen[1] && seen[2]);
    CHECK(hook_calls == hooks + 1);
    /* Nothing written to one block reached another. */
    for (size_t i = 0; i < n; i++) {
        const uint8_t *b = p[i];
        CHECK(b[0] == (uint8_t)i && b[SIZE - 1] == (uint8_t)i);
    }
    size_t low = xPortGetFreeHeapSize();
    HeapStats_t s = stats();
    CHECK(s.xAvailableHeapSpaceInBytes == low);
    CHECK(s.xMinimumEverFreeBytesRemaining == low);
    CHECK(xPortGetMinimumEverFreeHeapSize() == low);
    CHECK(s.xSizeOfLargestFreeBlockInBytes < SIZE + 2 * ALIGNMENT + 16);
    CHECK(s.xNumberOfSuccessfulAllocations == s0.xNumberOfSuccessfulAllocations + n);

    /* Small requests still fit in the remainders, until they do not either. */
    hooks = hook_calls;
    size_t small = 0;
    void *q[MAX];
    while (small < MAX && (q[small] = pvPortMalloc(8)) != NULL) {
        small++;
    }
    CHECK(small < MAX);
    CHECK(hook_calls == hooks + 1);
    for (size_t i = 0; i < small; i++) {
        vPortFree(q[i]);
    }

    for (size_t i = 0; i < n; i++) {
        vPortFree(p[i]);
    }
    s = stats();
    CHECK(xPortGetFreeHeapSize() == free0);
    CHECK(s.xNumberOfFreeBlocks == s0.xNumberOfFreeBlocks);
    CHECK(s.xNumberOfSuccessfulFrees == s0.xNumberOfSuccessfulFrees + n + small);
    /* The low-water mark stays where exhaustion put it, until reset. */
    CHECK(xPortGetMinimumEverFreeHeapSize() < low + 8 + 64);
    xPortResetHeapMinimumEverFreeHeapSize();
    CHECK(xPortGetMinimumEverFreeHeapSize() == free0);
    void *b = pvPortMalloc(100);
    CHECK(b != NULL);
    size_t after = xPortGetFreeHeapSize();
    vPortFree(b);
    CHECK(xPortGetMinimumEverFreeHeapSize() == after);
    CHECK(stats().xMinimumEverFreeBytesRemaining == after);
}

static void fragments_show_in_the_block_stats(void)
{
    size_t blocks0 = stats().xNumberOfFreeBlocks;
    void *a = pvPortMalloc(200);
    void *b = pvPortMalloc(300);
    void *c = pvPortMalloc(200);
    CHECK(a && b && c);
    size_t before = stats().xNumberOfFreeBlocks;
    vPortFree(b); /* a hole between a and c */
    HeapStats_t s = stats();
    CHECK(s.xNumberOfFreeBlocks == before + 1);
    CHECK(s.xSizeOfSmallestFreeBlockInBytes >= 300);
    CHECK(s.xSizeOfSmallestFreeBlockInBytes < 300 + 2 * 16 + ALIGNMENT);
    CHECK(s.xSizeOfLargestFreeBlockInBytes > s.xSizeOfSmallestFreeBlockInBytes);
    vPortFree(a);
    vPortFree(c);
    CHECK(stats().xNumberOfFreeBlocks == blocks0);
}

static void zero_huge_and_overflowing_requests_return_null(void)
{
    unsigned hooks = hook_calls;
    CHECK(pvPortMalloc(0) == NULL); /* as heap_5, which calls the hook for it too */
    CHECK(hook_calls == hooks + 1);
    CHECK(pvPortMalloc(SIZE_MAX) == NULL);
    CHECK(pvPortMalloc(RAM_BYTES) == NULL);
    CHECK(hook_calls == hooks + 3);
    /* pvPortCalloc: an overflowing product is refused before pvPortMalloc. */
    CHECK(pvPortCalloc(SIZE_MAX / 2, 4) == NULL);
    CHECK(hook_calls == hooks + 3);
}

static void calloc_zeroes(void)
{
    uint8_t *p = pvPortMalloc(256);
    CHECK(p != NULL);
    memset(p, 0xFF, 256);
    vPortFree(p);
    uint32_t *z = pvPortCalloc(64, sizeof(uint32_t));
    CHECK(z != NULL);
    CHECK((uintptr_t)z % ALIGNMENT == 0);
    for (size_t i = 0; i < 64; i++) {
        CHECK(z[i] == 0);
    }
    vPortFree(z);
}

static void bad_frees_are_ignored(void)
{
    HeapStats_t s0 = stats();
    int local = 0;
    vPortFree(&local);          /* not in the heap */
    vPortFree(ram + RAM_BYTES - 8); /* in the array, past the last region */
    void *p = pvPortMalloc(64);
    CHECK(p != NULL);
    vPortFree(p);
    vPortFree(p); /* already free (its memory not handed out again) */
    HeapStats_t s = stats();
    CHECK(s.xAvailableHeapSpaceInBytes == s0.xAvailableHeapSpaceInBytes);
    CHECK(s.xNumberOfSuccessfulFrees == s0.xNumberOfSuccessfulFrees + 1);
    CHECK(s.xNumberOfSuccessfulAllocations == s0.xNumberOfSuccessfulAllocations + 1);
}

static void a_second_definition_is_ignored(void)
{
    void *p = pvPortMalloc(128);
    CHECK(p != NULL);
    memset(p, 0x5A, 128);
    size_t free0 = xPortGetFreeHeapSize();
    static const HeapRegion_t other[] = { { ram + R2_AT, R2_LEN }, { NULL, 0 } };
    vPortDefineHeapRegions(other);
    CHECK(xPortGetFreeHeapSize() == free0);
    CHECK(((uint8_t *)p)[127] == 0x5A);
    vPortFree(p);
}

static void unusable_regions_leave_no_heap(void)
{
    /* Out of address order. */
    static const HeapRegion_t reversed[] = {
        { ram + R2_AT, R2_LEN }, { ram + R0_AT, R0_LEN }, { NULL, 0 } };
    /* Overlapping. */
    static const HeapRegion_t overlapping[] = {
        { ram, R0_LEN }, { ram + R0_LEN / 2, R0_LEN }, { NULL, 0 } };
    /* A first region too small for the heap's header. */
    static const HeapRegion_t tiny[] = { { ram, 64 }, { ram + R2_AT, R2_LEN }, { NULL, 0 } };
    /* Nine regions: one more than the heap supports. */
    HeapRegion_t nine[10];
    for (size_t i = 0; i < 9; i++) {
        /* The first holds the heap's header too. */
        nine[i].pucStartAddress = ram + (i == 0 ? 0 : i * 8192u + 1024u);
        nine[i].xSizeInBytes = i == 0 ? 8192u : 4096u;
    }
    nine[9].pucStartAddress = NULL;
    nine[9].xSizeInBytes = 0;
    const HeapRegion_t *bad[] = { reversed, overlapping, tiny, nine };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vPortHeapResetState();
        vPortDefineHeapRegions(bad[i]);
        unsigned hooks = hook_calls;
        CHECK(pvPortMalloc(8) == NULL);
        CHECK(hook_calls == hooks + 1);
        CHECK(xPortGetFreeHeapSize() == 0);
    }
    /* Eight regions are fine. */
    vPortHeapResetState();
    nine[8].pucStartAddress = NULL;
    nine[8].xSizeInBytes = 0;
    vPortDefineHeapRegions(nine);
    CHECK(stats().xNumberOfFreeBlocks == 8);
    void *p = pvPortMalloc(8);
    CHECK(p != NULL);
    vPortFree(p);
}

static void reset_state_allows_a_new_definition(void)
{
    vPortHeapResetState();
    CHECK(xPortGetFreeHeapSize() == 0);
    CHECK(pvPortMalloc(8) == NULL);
    vPortDefineHeapRegions(regions);
    HeapStats_t s = stats();
    CHECK(s.xNumberOfFreeBlocks == 3);
    CHECK(s.xNumberOfSuccessfulAllocations == 0 && s.xNumberOfSuccessfulFrees == 0);
    void *p = pvPortMalloc(8);
    CHECK(p != NULL && in_region(p, R0_AT, R0_LEN));
    vPortFree(p);
}

int main(void)
{
    before_the_regions_are_defined_everything_fails_softly();
    defined_regions_start_as_one_free_block_each();
    the_owner_table_grows_once_and_stays();
    blocks_are_aligned_and_counted();
    exhaustion_uses_every_region_then_returns_null_and_calls_the_hook();
    fragments_show_in_the_block_stats();
    zero_huge_and_overflowing_requests_return_null();
    calloc_zeroes();
    bad_frees_are_ignored();
    a_second_definition_is_ignored();
    unusable_regions_leave_no_heap();
    reset_state_allows_a_new_definition();
    printf("heap5 C tests passed: %u checks\n", checks);
    return 0;
}
