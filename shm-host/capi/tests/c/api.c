/* The C interface in one process: api NAME. A server and two clients of segment NAME;
 * every function's success and failure paths that can be reached without other
 * processes. Prints one line per failed check and "N passed, M failed" at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shm.h"

static int passed, failed;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) {                                                                    \
            passed++;                                                                  \
        } else {                                                                       \
            failed++;                                                                  \
            printf("line %d: %s failed (last error: %s)\n", __LINE__, #cond,           \
                   shm_last_error());                                                  \
        }                                                                              \
    } while (0)

#define EQ(call, code) CHECK((call) == (code))

static shm_buffer *filled(const shm_client *c, const char *text) {
    shm_buffer *b = NULL;
    EQ(shm_client_alloc(c, strlen(text), &b), SHM_OK);
    EQ(shm_buffer_append(b, text, strlen(text)), SHM_OK);
    return b;
}

static int holds(const shm_buffer *b, const char *text) {
    return shm_buffer_len(b) == strlen(text) && memcmp(shm_buffer_data(b), text, strlen(text)) == 0;
}

int main(int argc, char **argv) {
    if (argc != 2) return fprintf(stderr, "usage: %s NAME\n", argv[0]), 2;
    const char *name = argv[1];

    /* Errors: every code has its own text; unknown numbers are safe. */
    for (int code = SHM_OK; code <= SHM_ERR_OTHER; code++) CHECK(strlen(shm_strerror(code)) > 0);
    CHECK(strcmp(shm_strerror(-7), "unknown error code") == 0);
    CHECK(strcmp(shm_strerror(SHM_ERR_QUEUE_FULL), "receiver's queue is full") == 0);

    /* NULL arguments are refused with a code, never a crash. */
    shm_server *server = NULL;
    shm_client *c1 = NULL, *c2 = NULL;
    EQ(shm_server_create(NULL, NULL, &server), SHM_ERR_NULL_POINTER);
    EQ(shm_server_create(name, NULL, NULL), SHM_ERR_NULL_POINTER);
    EQ(shm_client_connect(name, NULL, NULL), SHM_ERR_NULL_POINTER);
    EQ(shm_server_alloc(NULL, 8, NULL), SHM_ERR_NULL_POINTER);
    EQ(shm_client_send(NULL, NULL, 0), SHM_ERR_NULL_POINTER);
    EQ(shm_buffer_resize(NULL, 8), SHM_ERR_NULL_POINTER);
    CHECK(shm_buffer_len(NULL) == 0 && shm_buffer_data(NULL) == NULL);
    CHECK(strstr(shm_last_error(), "NULL") != NULL);
    shm_server_close(NULL);
    shm_server_close(&server);
    shm_client_close(&c1);
    shm_buffer_free(NULL);

    /* Options are checked; names too. */
    shm_server_options bad = shm_server_options_default();
    bad.recv_mode = 7;
    EQ(shm_server_create(name, &bad, &server), SHM_ERR_INVALID_ARGUMENT);
    CHECK(server == NULL);
    bad = shm_server_options_default();
    bad.flags = 0x80;
    EQ(shm_server_create(name, &bad, &server), SHM_ERR_INVALID_ARGUMENT);
    EQ(shm_server_create("bad/name", NULL, &server), SHM_ERR_INVALID_NAME);
    EQ(shm_client_connect(name, NULL, &c1), SHM_ERR_NOT_FOUND);
    CHECK(c1 == NULL);

    /* A server and two clients. */
    shm_server_options opts = shm_server_options_default();
    opts.size = 4u << 20;
    opts.recv_mode = SHM_RECV_BLOCKING;
    EQ(shm_server_create(name, &opts, &server), SHM_OK);
    shm_server *second = NULL;
    EQ(shm_server_create(name, &opts, &second), SHM_ERR_TAKEOVER_REFUSED);
    CHECK(second == NULL);
    uint64_t baseline = 0;
    EQ(shm_server_available_bytes(server, &baseline), SHM_OK);
    shm_client_options copts = shm_client_options_default();
    copts.recv_mode = SHM_RECV_BUSY;
    EQ(shm_client_connect(name, &copts, &c1), SHM_OK);
    EQ(shm_client_connect(name, NULL, &c2), SHM_OK);
    shm_message msg;
    EQ(shm_server_try_recv(server, &msg), SHM_ERR_EMPTY);
    CHECK(msg.buffer == NULL);
    EQ(shm_server_recv_timeout(server, 10, &msg), SHM_ERR_TIMEOUT);
    EQ(shm_client_wait_connected(c1, 5000), SHM_OK);
    EQ(shm_client_wait_connected(c2, 5000), SHM_OK);
    size_t n = 0;
    EQ(shm_server_client_count(server, &n), SHM_OK);
    CHECK(n == 2);
    shm_event ev;
    EQ(shm_server_try_event(server, &ev), SHM_OK);
    CHECK(ev.kind == SHM_EVENT_CONNECTED);
    EQ(shm_server_try_event(server, &ev), SHM_OK);
    EQ(shm_server_try_event(server, &ev), SHM_ERR_EMPTY);
    shm_peer id1, id2;
    EQ(shm_client_id(c1, &id1), SHM_OK);
    EQ(shm_client_id(c2, &id2), SHM_OK);
    CHECK(id1.slot != id2.slot);

    /* Send consumes the handle; the server gets the same bytes and who sent them. */
    shm_buffer *b = filled(c1, "ping");
    CHECK(shm_buffer_capacity(b) >= 4);
    EQ(shm_client_send(c1, &b, 7), SHM_OK);
    CHECK(b == NULL);
    EQ(shm_client_send(c1, &b, 7), SHM_ERR_NULL_POINTER);
    EQ(shm_server_recv(server, &msg), SHM_OK);
    CHECK(msg.tag == 7 && msg.from.slot == id1.slot && msg.from.serial == id1.serial);
    CHECK(holds(msg.buffer, "ping"));
    /* ... and sends the same block back. */
    EQ(shm_server_send(server, msg.from, &msg.buffer, 8), SHM_OK);
    CHECK(msg.buffer == NULL);
    EQ(shm_client_recv_timeout(c1, 5000, &msg), SHM_OK);
    CHECK(msg.tag == 8 && holds(msg.buffer, "ping"));
    EQ(shm_client_try_recv(c1, &msg), SHM_ERR_EMPTY);
    CHECK(msg.buffer == NULL);

    /* A buffer is sent only through the server or client it came from. */
    b = filled(c2, "not yours");
    EQ(shm_client_send(c1, &b, 1), SHM_ERR_INVALID_ARGUMENT);
    EQ(shm_server_send(server, id2, &b, 1), SHM_ERR_INVALID_ARGUMENT);
    CHECK(b != NULL && holds(b, "not yours"));
    shm_buffer_free(&b);
    CHECK(b == NULL);

    /* Appending a buffer's own bytes to itself, also when it has to grow. */
    b = filled(c1, "ab");
    for (int i = 0; i < 10; i++) EQ(shm_buffer_append(b, shm_buffer_data(b), shm_buffer_len(b)), SHM_OK);
    CHECK(shm_buffer_len(b) == 2048);
    const uint8_t *d = shm_buffer_data(b);
    int pattern = 1;
    for (size_t i = 0; i < 2048; i++) pattern &= d[i] == (i % 2 ? 'b' : 'a');
    CHECK(pattern);
    EQ(shm_buffer_clear(b), SHM_OK);
    CHECK(shm_buffer_len(b) == 0);
    EQ(shm_buffer_append(b, NULL, 0), SHM_OK);
    EQ(shm_buffer_append(b, NULL, 1), SHM_ERR_NULL_POINTER);
    shm_buffer_free(&b);

    /* Broadcast: one block, co-owned; a write copies it first. */
    shm_buffer *all = NULL;
    EQ(shm_server_alloc(server, 5, &all), SHM_OK);
    EQ(shm_buffer_append(all, "hello", 5), SHM_OK);
    size_t sent = 0, lost = 9;
    EQ(shm_server_broadcast(server, all, 3, &sent, &lost), SHM_OK);
    CHECK(sent == 2 && lost == 0);
    uint32_t owners = 0;
    EQ(shm_buffer_owners(all, &owners), SHM_OK);
    CHECK(owners == 3);
    shm_message m1, m2;
    EQ(shm_client_recv_timeout(c1, 5000, &m1), SHM_OK);
    EQ(shm_client_recv_timeout(c2, 5000, &m2), SHM_OK);
    CHECK(m1.tag == 3 && holds(m1.buffer, "hello") && holds(m2.buffer, "hello"));
    uint8_t *w = NULL;
    EQ(shm_buffer_data_mut(m1.buffer, &w), SHM_OK);
    w[0] = 'j';
    CHECK(holds(m1.buffer, "jello") && holds(m2.buffer, "hello") && holds(all, "hello"));
    EQ(shm_buffer_owners(m1.buffer, &owners), SHM_OK);
    CHECK(owners == 1);
    shm_buffer_free(&m1.buffer);
    shm_buffer_free(&m2.buffer);
    shm_buffer_free(&all);

    /* A send to a client that left fails and leaves the buffer with the caller. */
    shm_client_close(&c2);
    CHECK(c2 == NULL);
    EQ(shm_server_recv_timeout(server, 200, &msg), SHM_ERR_TIMEOUT); /* takes the Disconnect */
    EQ(shm_server_event_timeout(server, 1000, &ev), SHM_OK);
    CHECK(ev.kind == SHM_EVENT_DISCONNECTED && ev.client.slot == id2.slot);
    EQ(shm_server_alloc(server, 4, &b), SHM_OK);
    EQ(shm_buffer_append(b, "late", 4), SHM_OK);
    EQ(shm_server_send(server, id2, &b, 1), SHM_ERR_PEER_GONE);
    CHECK(b != NULL && holds(b, "late"));
    shm_buffer_free(&b);

    /* A request that never fits; a timed one that fits. */
    EQ(shm_client_alloc_timeout(c1, 64u << 20, 10, &b), SHM_ERR_TOO_LARGE);
    EQ(shm_server_alloc_timeout(server, 64, 10, &b), SHM_OK);

    /* Statistics and the structure check. */
    shm_stats st;
    EQ(shm_server_stats(server, &st), SHM_OK);
    CHECK(st.processes == 2 && st.allocs >= st.frees && st.free_bytes <= st.heap_bytes);
    EQ(shm_client_stats(c1, &st), SHM_OK);
    CHECK(st.processes == 2);
    EQ(shm_server_check(server), SHM_OK);
    uint32_t reclaimed = 9;
    EQ(shm_server_watchdog(server, &reclaimed), SHM_OK);
    CHECK(reclaimed == 0);

    /* A buffer outlives its server; then the client finds no server. */
    shm_client_close(&c1);
    shm_server_close(&server);
    CHECK(server == NULL);
    CHECK(shm_buffer_len(b) == 0);
    shm_buffer_free(&b);
    EQ(shm_client_connect(name, NULL, &c1), SHM_ERR_NOT_FOUND);

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
