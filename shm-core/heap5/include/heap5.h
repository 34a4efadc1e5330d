/*
 * heap5.h - FreeRTOS heap_5's API, implemented by libshm_heap5.a (shm-core's allocator).
 *
 * A FreeRTOS project does not need this header: FreeRTOS.h includes portable.h, which
 * declares the same types and functions, so the project drops heap_5.c from its build and
 * links libshm_heap5.a instead. Programs built without FreeRTOS (tests, bare-metal code)
 * include this header; included after portable.h it declares nothing again.
 *
 * Behaviour, where heap_5 would stop at a failed configASSERT:
 *  - before vPortDefineHeapRegions, or when its regions cannot be used (more than 8, not
 *    in increasing address order, overlapping, more than 4 GiB from the first, or a first
 *    region too small for the heap's header), pvPortMalloc returns NULL and the
 *    statistics read 0;
 *  - a second vPortDefineHeapRegions is ignored unless vPortHeapResetState came first;
 *  - vPortFree ignores pointers outside the regions, and a second free of a block until
 *    its memory is handed out again; freeing anything else is undefined, as with heap_5.
 *
 * Blocks are aligned to portBYTE_ALIGNMENT: 8, or the value of the environment variable
 * SHM_HEAP5_BYTE_ALIGNMENT (a power of two from 8 to 4096) when the library was built.
 * pvPortMalloc(0) returns NULL, as heap_5 does.
 *
 * The malloc-failed hook (configUSE_MALLOC_FAILED_HOOK == 1): build the library with the
 * Cargo feature malloc-failed-hook; every NULL from pvPortMalloc then calls
 * vApplicationMallocFailedHook(), which the application defines. Without the feature the
 * library does not reference it.
 *
 * Thread safety: every function runs inside a critical section of the Rust
 * critical-section crate. Built for a host, the library uses a process-wide lock. Built
 * for a target without an operating system, the program provides it: the Cargo feature
 * freertos-critical-section implements it with vTaskSuspendAll()/xTaskResumeAll(), as
 * heap_5 does (interrupt handlers must not allocate), or a Rust firmware links its own.
 */
#ifndef SHM_HEAP5_H
#define SHM_HEAP5_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef PORTABLE_H /* FreeRTOS's portable.h declares all of this already. */

/* One region of RAM for the heap; an entry with xSizeInBytes == 0 ends the list. */
typedef struct HeapRegion
{
    uint8_t * pucStartAddress;
    size_t xSizeInBytes;
} HeapRegion_t;

/* Filled by vPortGetHeapStats. Sizes are of whole blocks, headers included. */
typedef struct xHeapStats
{
    size_t xAvailableHeapSpaceInBytes;      /* Sum of all free blocks. */
    size_t xSizeOfLargestFreeBlockInBytes;  /* Largest free block. */
    size_t xSizeOfSmallestFreeBlockInBytes; /* Smallest free block (0 if none). */
    size_t xNumberOfFreeBlocks;             /* Free blocks. */
    size_t xMinimumEverFreeBytesRemaining;  /* Lowest free bytes since definition or reset. */
    size_t xNumberOfSuccessfulAllocations;  /* pvPortMalloc calls that returned a block. */
    size_t xNumberOfSuccessfulFrees;        /* vPortFree calls that freed a block. */
} HeapStats_t;

/* Defines the heap's RAM: regions in increasing address order, ending with { NULL, 0 }.
 * The regions belong to the heap from now on. */
void vPortDefineHeapRegions( const HeapRegion_t * const pxHeapRegions );

/* xWantedSize bytes aligned to portBYTE_ALIGNMENT, or NULL. */
void * pvPortMalloc( size_t xWantedSize );

/* xNum * xSize zeroed bytes, or NULL (also when the product overflows). */
void * pvPortCalloc( size_t xNum,
                     size_t xSize );

/* Frees a block from pvPortMalloc or pvPortCalloc; NULL does nothing. */
void vPortFree( void * pv );

/* Bytes in free blocks, headers included. */
size_t xPortGetFreeHeapSize( void );

/* Lowest xPortGetFreeHeapSize() since the regions were defined or the last reset. */
size_t xPortGetMinimumEverFreeHeapSize( void );

/* Restarts that low-water mark from the current free bytes. */
void xPortResetHeapMinimumEverFreeHeapSize( void );

/* Fills *pxHeapStats. */
void vPortGetHeapStats( HeapStats_t * pxHeapStats );

/* Forgets the heap: every block becomes invalid, and vPortDefineHeapRegions may be
 * called again (FreeRTOS 11.1). */
void vPortHeapResetState( void );

#endif /* PORTABLE_H */

/* Defined by the application when the library is built with malloc-failed-hook. */
void vApplicationMallocFailedHook( void );

#ifdef __cplusplus
}
#endif

#endif /* SHM_HEAP5_H */
