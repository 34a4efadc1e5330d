/* A C client streaming checksummed messages: stream_client NAME NUMBER COUNT.
 *
 * Connects, prints "hello #slot.serial", waits for the server's "go" broadcast, then
 * sends COUNT messages (0: without end) of the stream in wire.h as client NUMBER and
 * checks that each comes back unchanged (same tag, same bytes). It receives in turn
 * with a timeout, blocking, and by polling (try); prints "progress N" every 100
 * messages and "done N" at the end. */
#include <stdio.h>
#include <stdlib.h>
#include "shm.h"
#include "wire.h"

static int fail(const char *what, shm_error e) {
    printf("FAILED %s: %s (%s)\n", what, shm_strerror(e), shm_last_error());
    return 1;
}

/* The next message, received the way `seq` selects. */
static shm_error receive(const shm_client *client, uint32_t seq, shm_message *msg) {
    switch (seq % 3) {
    case 0:
        return shm_client_recv_timeout(client, 30000, msg);
    case 1:
        return shm_client_recv(client, msg);
    default: {
        double deadline = now_s() + 30;
        shm_error e;
        while ((e = shm_client_try_recv(client, msg)) == SHM_ERR_EMPTY && now_s() < deadline) {
        }
        return e;
    }
    }
}

int main(int argc, char **argv) {
    if (argc != 4) return fprintf(stderr, "usage: %s NAME NUMBER COUNT\n", argv[0]), 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    uint32_t me = (uint32_t)atoi(argv[2]);
    uint32_t count = (uint32_t)strtoul(argv[3], NULL, 10);
    shm_client *client = NULL;
    shm_error e = shm_client_connect(argv[1], NULL, &client);
    if (e != SHM_OK) return fail("connect", e);
    shm_peer id;
    if ((e = shm_client_id(client, &id)) != SHM_OK) return fail("id", e);
    printf("hello #%u.%u\n", id.slot, id.serial);
    if ((e = shm_client_wait_connected(client, 30000)) != SHM_OK) return fail("connected", e);

    shm_message go;
    if ((e = shm_client_recv_timeout(client, 60000, &go)) != SHM_OK) return fail("go", e);
    uint32_t owners = 0;
    if ((e = shm_buffer_owners(go.buffer, &owners)) != SHM_OK) return fail("owners", e);
    if (go.tag != TAG_GO || shm_buffer_len(go.buffer) != 2 ||
        memcmp(shm_buffer_data(go.buffer), "go", 2) != 0 || owners < 1)
        return fail("go message", SHM_ERR_BAD_MESSAGE);
    shm_buffer_free(&go.buffer);

    for (uint32_t seq = 0; count == 0 || seq < count; seq++) {
        size_t len = WIRE_HEADER + body_len(me, seq);
        shm_buffer *buf = NULL;
        uint8_t *data = NULL;
        if ((e = shm_client_alloc_timeout(client, len, 10000, &buf)) != SHM_OK) return fail("alloc", e);
        if ((e = shm_buffer_resize(buf, len)) != SHM_OK) return fail("resize", e);
        if ((e = shm_buffer_data_mut(buf, &data)) != SHM_OK) return fail("data", e);
        encode(data, me, seq);
        uint32_t sum = fnv1a(data, len);
        while ((e = shm_client_send(client, &buf, seq)) == SHM_ERR_QUEUE_FULL) {
        }
        if (e != SHM_OK) return fail("send", e);
        if (buf != NULL) return fail("send left the handle", SHM_ERR_INTERNAL);
        shm_message echo;
        if ((e = receive(client, seq, &echo)) != SHM_OK) return fail("recv", e);
        size_t got = shm_buffer_len(echo.buffer);
        const uint8_t *back = shm_buffer_data(echo.buffer);
        if (echo.tag != seq || got != len || fnv1a(back, got) != sum || !wire_ok(back, got)) {
            printf("FAILED echo %u corrupted (tag %u, %zu bytes)\n", seq, echo.tag, got);
            return 1;
        }
        shm_buffer_free(&echo.buffer);
        if ((seq + 1) % 100 == 0) printf("progress %u\n", seq + 1);
    }
    printf("done %u\n", count);
    shm_client_close(&client);
    return 0;
}
