/* SHA-256 of many small messages at once: 16 messages side by side in the lanes of AVX-512.
 *
 * digest_many(list_of_bytes) -> bytes: the 32-byte digests, in the list's order.
 * SUPPORTED: whether this CPU (and its OS) run AVX-512F and AVX-512BW; without it, or without
 * this module, hashing.py uses hashlib.
 *
 * Why: a drop of many small files is bound by SHA-256 itself. One message at a time, even with
 * the SHA extensions, a core does about 1.8 GB/s; sixteen in the lanes of one register do more
 * than twice that (measured on the same core, see the README's performance section). The rounds
 * are FIPS 180-4 section 6.2.2 as written; tests compare every result with hashlib.
 */
#define PY_SSIZE_T_CLEAN
#define Py_LIMITED_API 0x030B0000
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LANES_BUILT 1
#include <immintrin.h>
#else
#define LANES_BUILT 0
#endif

#define LANES 16
#define BLOCK 64

#if LANES_BUILT
#define AVX512 __attribute__((target("avx512f,avx512bw")))

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
static const uint32_t H0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};
static const uint8_t IDLE_BLOCK[BLOCK];

#define ROR(x, n) _mm512_ror_epi32((x), (n))
#define ADD(a, b) _mm512_add_epi32((a), (b))
#define XOR3(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0x96)
#define CH(e, f, g) _mm512_ternarylogic_epi32((e), (f), (g), 0xca)
#define MAJ(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0xe8)

/* Rows (a block of each lane) become columns (one word of every lane): a 16x16 transpose. */
AVX512 static void transpose(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int m = 0; m < 4; m++) {
        __m512i low = _mm512_shuffle_i32x4(u[m], u[4 + m], 0x44);
        __m512i low2 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0x44);
        __m512i high = _mm512_shuffle_i32x4(u[m], u[4 + m], 0xee);
        __m512i high2 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0xee);
        r[m] = _mm512_shuffle_i32x4(low, low2, 0x88);
        r[4 + m] = _mm512_shuffle_i32x4(low, low2, 0xdd);
        r[8 + m] = _mm512_shuffle_i32x4(high, high2, 0x88);
        r[12 + m] = _mm512_shuffle_i32x4(high, high2, 0xdd);
    }
}

/* One 64-byte block of each lane into that lane's state. */
AVX512 static void compress(__m512i state[8], const uint8_t *const blocks[LANES]) {
    const __m512i big_endian = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
    __m512i w[16];
    for (int i = 0; i < LANES; i++) {
        w[i] = _mm512_shuffle_epi8(_mm512_loadu_si512(blocks[i]), big_endian);
    }
    transpose(w);
    __m512i a = state[0], b = state[1], c = state[2], d = state[3];
    __m512i e = state[4], f = state[5], g = state[6], h = state[7];
    for (int t = 0; t < 64; t++) {
        if (t >= 16) {
            __m512i w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
            __m512i s0 = XOR3(ROR(w15, 7), ROR(w15, 18), _mm512_srli_epi32(w15, 3));
            __m512i s1 = XOR3(ROR(w2, 17), ROR(w2, 19), _mm512_srli_epi32(w2, 10));
            w[t & 15] = ADD(ADD(w[t & 15], s0), ADD(w[(t - 7) & 15], s1));
        }
        __m512i t1 = ADD(ADD(h, XOR3(ROR(e, 6), ROR(e, 11), ROR(e, 25))),
                         ADD(CH(e, f, g), ADD(w[t & 15], _mm512_set1_epi32((int)K[t]))));
        __m512i t2 = ADD(XOR3(ROR(a, 2), ROR(a, 13), ROR(a, 22)), MAJ(a, b, c));
        h = g;
        g = f;
        f = e;
        e = ADD(d, t1);
        d = c;
        c = b;
        b = a;
        a = ADD(t1, t2);
    }
    state[0] = ADD(state[0], a);
    state[1] = ADD(state[1], b);
    state[2] = ADD(state[2], c);
    state[3] = ADD(state[3], d);
    state[4] = ADD(state[4], e);
    state[5] = ADD(state[5], f);
    state[6] = ADD(state[6], g);
    state[7] = ADD(state[7], h);
}

typedef struct {
    const uint8_t *data;
    size_t length;
    Py_ssize_t index; /* the message's place in the output */
} Message;

typedef struct {
    const uint8_t *data;
    size_t whole_blocks; /* blocks read straight from the message */
    size_t blocks;       /* whole_blocks and the 1 or 2 blocks of the padded tail */
    size_t next;
    Py_ssize_t index; /* -1: idle */
    uint8_t tail[2 * BLOCK];
} Lane;

typedef union {
    __m512i vectors[8];
    uint32_t words[8][LANES];
} State;

static int longest_first(const void *left, const void *right) {
    size_t a = ((const Message *)left)->length, b = ((const Message *)right)->length;
    return a < b ? 1 : a > b ? -1 : 0;
}

/* The tail: the last partial block, 0x80, zeros, and the length in bits, big-endian. */
static void start(Lane *lane, uint32_t state[8][LANES], int number, const Message *message) {
    size_t rest = message->length % BLOCK;
    size_t tail_blocks = rest + 9 <= BLOCK ? 1 : 2;
    uint64_t bits = (uint64_t)message->length * 8;
    lane->data = message->data;
    lane->whole_blocks = message->length / BLOCK;
    lane->blocks = lane->whole_blocks + tail_blocks;
    lane->next = 0;
    lane->index = message->index;
    memset(lane->tail, 0, sizeof lane->tail);
    if (rest) {
        memcpy(lane->tail, message->data + lane->whole_blocks * BLOCK, rest);
    }
    lane->tail[rest] = 0x80;
    for (int k = 0; k < 8; k++) {
        lane->tail[tail_blocks * BLOCK - 1 - k] = (uint8_t)(bits >> (8 * k));
    }
    for (int i = 0; i < 8; i++) {
        state[i][number] = H0[i];
    }
}

static void finish(const uint32_t state[8][LANES], int number, uint8_t *digest) {
    for (int i = 0; i < 8; i++) {
        uint32_t word = state[i][number];
        digest[4 * i] = (uint8_t)(word >> 24);
        digest[4 * i + 1] = (uint8_t)(word >> 16);
        digest[4 * i + 2] = (uint8_t)(word >> 8);
        digest[4 * i + 3] = (uint8_t)word;
    }
}

/* Longest messages first, each lane taking the next message as soon as its own is done, so that
 * the lanes run out of work at about the same time. */
AVX512 static void digest_lanes(Message *messages, Py_ssize_t count, uint8_t *out) {
    State state;
    Lane lanes[LANES];
    Py_ssize_t taken = 0;
    int busy = 0;
    qsort(messages, (size_t)count, sizeof *messages, longest_first);
    for (int number = 0; number < LANES; number++) {
        lanes[number].index = -1;
        if (taken < count) {
            start(&lanes[number], state.words, number, &messages[taken++]);
            busy++;
        }
    }
    while (busy) {
        const uint8_t *blocks[LANES];
        for (int number = 0; number < LANES; number++) {
            Lane *lane = &lanes[number];
            if (lane->index < 0) {
                blocks[number] = IDLE_BLOCK;
            } else if (lane->next < lane->whole_blocks) {
                blocks[number] = lane->data + lane->next * BLOCK;
            } else {
                blocks[number] = lane->tail + (lane->next - lane->whole_blocks) * BLOCK;
            }
        }
        compress(state.vectors, blocks);
        for (int number = 0; number < LANES; number++) {
            Lane *lane = &lanes[number];
            if (lane->index < 0 || ++lane->next < lane->blocks) {
                continue;
            }
            finish(state.words, number, out + 32 * lane->index);
            if (taken < count) {
                start(lane, state.words, number, &messages[taken++]);
            } else {
                lane->index = -1;
                busy--;
            }
        }
    }
}

static int supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
#endif

static PyObject *digest_many(PyObject *module, PyObject *messages) {
    (void)module;
#if LANES_BUILT
    if (!supported()) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU has no AVX-512; use hashlib");
        return NULL;
    }
    if (!PyList_Check(messages)) {
        PyErr_SetString(PyExc_TypeError, "digest_many() takes a list of bytes-like objects");
        return NULL;
    }
    Py_ssize_t count = PyList_Size(messages);
    Py_buffer *views = PyMem_Calloc((size_t)count + 1, sizeof *views);
    Message *table = PyMem_Calloc((size_t)count + 1, sizeof *table);
    PyObject *result = PyBytes_FromStringAndSize(NULL, 32 * count);
    Py_ssize_t held = 0;
    if (views == NULL || table == NULL || result == NULL) {
        PyErr_NoMemory();
        goto failed;
    }
    for (; held < count; held++) {
        if (PyObject_GetBuffer(PyList_GetItem(messages, held), &views[held], PyBUF_SIMPLE) < 0) {
            goto failed;
        }
        table[held].data = views[held].buf;
        table[held].length = (size_t)views[held].len;
        table[held].index = held;
    }
    uint8_t *out = (uint8_t *)PyBytes_AsString(result);
    Py_BEGIN_ALLOW_THREADS
    digest_lanes(table, count, out);
    Py_END_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < held; i++) {
        PyBuffer_Release(&views[i]);
    }
    PyMem_Free(views);
    PyMem_Free(table);
    return result;
failed:
    for (Py_ssize_t i = 0; i < held; i++) {
        PyBuffer_Release(&views[i]);
    }
    PyMem_Free(views);
    PyMem_Free(table);
    Py_XDECREF(result);
    return NULL;
#else
    (void)messages;
    PyErr_SetString(PyExc_RuntimeError, "built without AVX-512 support; use hashlib");
    return NULL;
#endif
}

static PyMethodDef methods[] = {
    {"digest_many", digest_many, METH_O, "SHA-256 digests (32 bytes each, in order) of a list of messages."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sha256x16", "SHA-256 of 16 messages at once with AVX-512.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sha256x16(void) {
    PyObject *created = PyModule_Create(&module);
#if LANES_BUILT
    int lanes = supported();
#else
    int lanes = 0;
#endif
    PyObject *flag = PyBool_FromLong(lanes);
    if (created != NULL && PyModule_AddObjectRef(created, "SUPPORTED", flag) < 0) {
        Py_CLEAR(created);
    }
    Py_DECREF(flag);
    return created;
}
