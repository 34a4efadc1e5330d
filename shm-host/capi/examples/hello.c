/* A C client of `shmipc serve NAME`: sends COUNT buffers (default 1) and prints the
 * FNV-1a checksum of each, as the server prints it on arrival. */
#include <stdio.h>
#include <stdlib.h>
#include "shm.h"

static uint32_t fnv1a(const uint8_t *p, size_t n) {
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x01000193u;
    return h;
}

static int fail(const char *what, shm_error e) {
    fprintf(stderr, "%s: %s (%s)\n", what, shm_strerror(e), shm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s NAME [COUNT]\n", argv[0]), 2;
    int count = argc > 2 ? atoi(argv[2]) : 1;
    shm_client *client = NULL;
    shm_error e = shm_client_connect(argv[1], NULL, &client);
    if (e != SHM_OK) return fail("connect", e);
    for (int i = 0; i < count; i++) {
        size_t len = 64 + (size_t)i * 1000;
        shm_buffer *buf = NULL;                 /* a block of the segment, ours */
        uint8_t *data = NULL;
        if ((e = shm_client_alloc(client, len, &buf)) != SHM_OK) return fail("alloc", e);
        if ((e = shm_buffer_resize(buf, len)) != SHM_OK ||
            (e = shm_buffer_data_mut(buf, &data)) != SHM_OK) return fail("write", e);
        for (size_t j = 0; j < len; j++) data[j] = (uint8_t)(i + j);  /* written in place */
        uint32_t sum = fnv1a(data, len);
        if ((e = shm_client_send(client, &buf, (uint32_t)i)) != SHM_OK) return fail("send", e);
        /* Sent: the server owns the block now, and buf is NULL. */
        printf("sent tag %d bytes %zu checksum 0x%08x\n", i, len, sum);
    }
    shm_client_close(&client);
    return 0;
}
