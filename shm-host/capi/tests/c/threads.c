/* One server and one client shared by threads: threads NAME.
 *
 * Two server threads receive and echo at the same time through one shm_server; four
 * client threads send checksummed messages and receive echoes at the same time through
 * one shm_client (an echo may reach any of them). Every message must come back intact,
 * exactly once, and the segment's memory must return once the client is closed. Prints
 * "N passed, M failed". */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "shm.h"
#include "wire.h"

#define SENDERS 4
#define PER_SENDER 250u
#define TOTAL (SENDERS * PER_SENDER)

static shm_server *server;
static shm_client *client;
static int passed, failed;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char seen[SENDERS][PER_SENDER];
static unsigned received;
static int senders_done;

static void check(int ok, const char *what) {
    pthread_mutex_lock(&lock);
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("%s failed (last error: %s)\n", what, shm_last_error());
    }
    pthread_mutex_unlock(&lock);
}

static void *serve(void *arg) {
    (void)arg;
    for (;;) {
        shm_message m;
        shm_error e = shm_server_recv_timeout(server, 100, &m);
        if (e == SHM_ERR_TIMEOUT) {
            pthread_mutex_lock(&lock);
            int done = senders_done;
            pthread_mutex_unlock(&lock);
            if (done) return NULL;
            continue;
        }
        check(e == SHM_OK, "server recv");
        if (e != SHM_OK) return NULL;
        check(wire_ok(shm_buffer_data(m.buffer), shm_buffer_len(m.buffer)), "checksum at the server");
        check(shm_server_send(server, m.from, &m.buffer, m.tag) == SHM_OK && m.buffer == NULL, "echo");
        shm_buffer_free(&m.buffer); /* after a failed send: the buffer stayed ours */
    }
}

static void *send_and_receive(void *arg) {
    uint32_t me = (uint32_t)(uintptr_t)arg;
    for (uint32_t i = 0; i < PER_SENDER; i++) {
        uint32_t seq = me * PER_SENDER + i;
        size_t len = WIRE_HEADER + body_len(me, seq);
        shm_buffer *b = NULL;
        uint8_t *data = NULL;
        check(shm_client_alloc_timeout(client, len, 10000, &b) == SHM_OK, "alloc");
        check(shm_buffer_resize(b, len) == SHM_OK && shm_buffer_data_mut(b, &data) == SHM_OK, "write");
        if (data == NULL) return NULL;
        encode(data, me, seq);
        check(shm_client_send(client, &b, seq) == SHM_OK && b == NULL, "send");
        shm_message m;
        check(shm_client_recv_timeout(client, 30000, &m) == SHM_OK, "client recv");
        if (m.buffer == NULL) return NULL;
        const uint8_t *p = shm_buffer_data(m.buffer);
        size_t n = shm_buffer_len(m.buffer);
        int ok = wire_ok(p, n) && get32(p) == m.tag && get32(p + 12) < SENDERS &&
                 m.tag == get32(p + 12) * PER_SENDER + (m.tag % PER_SENDER);
        check(ok, "echo intact");
        if (ok) {
            pthread_mutex_lock(&lock);
            seen[get32(p + 12)][m.tag % PER_SENDER]++;
            received++;
            pthread_mutex_unlock(&lock);
        }
        shm_buffer_free(&m.buffer);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return fprintf(stderr, "usage: %s NAME\n", argv[0]), 2;
    shm_server_options opts = shm_server_options_default();
    opts.size = 8u << 20;
    check(shm_server_create(argv[1], &opts, &server) == SHM_OK, "create");
    if (server == NULL) return 1;
    uint64_t baseline = 0, available = 0;
    check(shm_server_available_bytes(server, &baseline) == SHM_OK, "available");
    check(shm_client_connect(argv[1], NULL, &client) == SHM_OK, "connect");
    if (client == NULL) return 1;

    pthread_t servers[2], senders[SENDERS];
    for (int i = 0; i < 2; i++) pthread_create(&servers[i], NULL, serve, NULL);
    for (uintptr_t i = 0; i < SENDERS; i++) pthread_create(&senders[i], NULL, send_and_receive, (void *)i);
    for (int i = 0; i < SENDERS; i++) pthread_join(senders[i], NULL);
    pthread_mutex_lock(&lock);
    senders_done = 1;
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < 2; i++) pthread_join(servers[i], NULL);

    int once = 1;
    for (int t = 0; t < SENDERS; t++)
        for (unsigned i = 0; i < PER_SENDER; i++) once &= seen[t][i] == 1;
    check(received == TOTAL && once, "every message back exactly once");

    shm_client_close(&client);
    double until = now_s() + 30;  /* the client's queue is freed as it closes */
    shm_error e;
    while ((e = shm_server_available_bytes(server, &available)) == SHM_OK && available != baseline &&
           now_s() < until) {
        struct timespec pause = {0, 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    check(e == SHM_OK, "available");
    check(available == baseline, "memory back");
    check(shm_server_check(server) == SHM_OK, "check");
    shm_server_close(&server);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
