/* A C server for C clients: echo_server NAME CLIENTS.
 *
 * Creates segment NAME, waits for CLIENTS clients to connect, broadcasts one "go"
 * buffer to all of them (one block, co-owned), then checks every message's checksum and
 * sends the same block back to its sender, printing every event. Once CLIENTS clients
 * have left (cleanly or by dying), it waits for the segment's memory to be back where it
 * was before they came, prints statistics and the result of the structure check, closes
 * the server and exits 0 if everything held. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include "shm.h"
#include "wire.h"

static int fail(const char *what, shm_error e) {
    printf("FAILED %s: %s (%s)\n", what, shm_strerror(e), shm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) return fprintf(stderr, "usage: %s NAME CLIENTS\n", argv[0]), 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int clients = atoi(argv[2]);
    shm_server_options opts = shm_server_options_default();
    opts.size = 8u << 20;
    opts.heartbeat_ms = 50;
    shm_server *server = NULL;
    shm_error e = shm_server_create(argv[1], &opts, &server);
    if (e != SHM_OK) return fail("create", e);
    uint64_t baseline = 0;
    if ((e = shm_server_available_bytes(server, &baseline)) != SHM_OK) return fail("available", e);
    printf("ready baseline=%" PRIu64 "\n", baseline);

    int connected = 0, gone = 0, died = 0, go_sent = 0;
    uint64_t echoed = 0, bad = 0, freed = 0;
    double deadline = now_s() + 300;  /* a hang, not a timing check */
    while (gone < clients) {
        if (now_s() > deadline) return fail("waiting for clients to leave", SHM_ERR_TIMEOUT);
        shm_message msg;
        e = shm_server_recv_timeout(server, 20, &msg);
        if (e == SHM_OK) {
            size_t len = shm_buffer_len(msg.buffer);
            if (!wire_ok(shm_buffer_data(msg.buffer), len)) {
                bad++;
                printf("bad message from #%u.%u tag %u\n", msg.from.slot, msg.from.serial, msg.tag);
            }
            /* The same block goes back; a client killed meanwhile: the buffer stays ours. */
            if (shm_server_send(server, msg.from, &msg.buffer, msg.tag) != SHM_OK)
                shm_buffer_free(&msg.buffer);
            echoed++;
        } else if (e != SHM_ERR_TIMEOUT) {
            return fail("recv", e);
        }
        shm_event ev;
        while (shm_server_try_event(server, &ev) == SHM_OK) {
            switch (ev.kind) {
            case SHM_EVENT_CONNECTED:
                connected++;
                printf("connected #%u.%u\n", ev.client.slot, ev.client.serial);
                break;
            case SHM_EVENT_DISCONNECTED:
                gone++;
                printf("disconnected #%u.%u\n", ev.client.slot, ev.client.serial);
                break;
            case SHM_EVENT_UNRESPONSIVE:
                printf("unresponsive #%u.%u\n", ev.client.slot, ev.client.serial);
                break;
            case SHM_EVENT_DIED:
                gone++;
                died++;
                freed += ev.bytes_freed;
                printf("died #%u.%u bytes_freed=%" PRIu64 "\n", ev.client.slot, ev.client.serial,
                       ev.bytes_freed);
                break;
            }
        }
        if (!go_sent && connected == clients) {
            shm_buffer *go = NULL;
            size_t sent = 0, failed = 0;
            if ((e = shm_server_alloc(server, 2, &go)) != SHM_OK) return fail("alloc go", e);
            if ((e = shm_buffer_append(go, "go", 2)) != SHM_OK) return fail("append go", e);
            if ((e = shm_server_broadcast(server, go, TAG_GO, &sent, &failed)) != SHM_OK)
                return fail("broadcast", e);
            shm_buffer_free(&go);  /* the clients' shares keep the block alive */
            printf("broadcast go to %zu clients (%zu failed)\n", sent, failed);
            go_sent = 1;
        }
    }

    /* A client that left cleanly may still be closing its queue: wait for its memory. */
    uint64_t available = 0;
    double until = now_s() + 30;
    do {
        if ((e = shm_server_available_bytes(server, &available)) != SHM_OK) return fail("available", e);
        if (available == baseline) break;
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    } while (now_s() < until);
    shm_stats st;
    if ((e = shm_server_stats(server, &st)) != SHM_OK) return fail("stats", e);
    shm_error check = shm_server_check(server);
    printf("final echoed=%" PRIu64 " bad=%" PRIu64 " died=%d freed=%" PRIu64
           " available=%" PRIu64 " baseline=%" PRIu64 " processes=%u allocs=%" PRIu64
           " frees=%" PRIu64 " check=%s\n",
           echoed, bad, died, freed, available, baseline, st.processes, st.allocs, st.frees,
           check == SHM_OK ? "ok" : shm_last_error());
    shm_server_close(&server);
    return (bad == 0 && available == baseline && check == SHM_OK && st.processes == 1) ? 0 : 1;
}
