/* The checksummed stream of the C test programs: a 16-byte header (sequence number,
 * body length, FNV-1a checksum of the body, client number), then a body of bytes derived
 * from (client, sequence number), 0..4095 bytes long. */
#ifndef WIRE_H
#define WIRE_H

#include <stdint.h>
#include <string.h>
#include <time.h>

#define WIRE_HEADER 16u
/* Tag of the server's broadcast that starts the stream. */
#define TAG_GO 0xB0B0B0B0u

static inline uint32_t fnv1a(const uint8_t *p, size_t n) {
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x01000193u;
    return h;
}

static inline uint32_t mix(uint32_t client, uint32_t seq) {
    uint64_t x = (((uint64_t)client << 32) | seq) * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    return (uint32_t)x ^ (uint32_t)(x >> 32);
}

static inline size_t body_len(uint32_t client, uint32_t seq) {
    return mix(client, seq) % 4096u;
}

static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* Writes message (client, seq) into p, which holds WIRE_HEADER + body_len bytes. */
static inline void encode(uint8_t *p, uint32_t client, uint32_t seq) {
    size_t n = body_len(client, seq);
    uint32_t x = mix(seq, client) | 1u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        p[WIRE_HEADER + i] = (uint8_t)x;
    }
    put32(p, seq);
    put32(p + 4, (uint32_t)n);
    put32(p + 8, fnv1a(p + WIRE_HEADER, n));
    put32(p + 12, client);
}

/* Whether p (len bytes) is a well-formed message: its length and checksum agree. */
static inline int wire_ok(const uint8_t *p, size_t len) {
    if (len < WIRE_HEADER || get32(p + 4) != len - WIRE_HEADER) return 0;
    return fnv1a(p + WIRE_HEADER, len - WIRE_HEADER) == get32(p + 8);
}

static inline double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#endif
