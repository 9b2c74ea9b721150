/* SHA-256 of many small files at once: 32 messages side by side in the 32-bit lanes of two
 * AVX-512 registers (the name says 16: the lanes of one register).
 *
 * SUPPORTED: whether this CPU (and its OS) run AVX-512F and AVX-512BW; without it, or without
 * this module (built for Linux x86-64 only), hashing.py does all of this in Python with hashlib.
 * digest_many(messages) -> bytes: the 32-byte digests of a list of buffers, in the list's order.
 * stat_files(paths) -> (sizes, mtimes, count): int64 arrays as bytes, for the files in order
 *     while each is a regular file; `count` < len(paths) stops at one that is not, or cannot be
 *     stat'ed, for Python to name the problem.
 * digest_files(paths, sizes, mtimes, arena) -> (digests, refused): the files hashed 32 at a time,
 *     each read in 128 KiB chunks through its lane's part of `arena` (4 MiB + 8 KiB); refused[i] is 1 for
 *     a file that was not the regular file listed with that size and mtime (its digest is zeros),
 *     for Python to read again and name the problem.
 *
 * Why: a drop of many small files is bound by SHA-256 itself. One message at a time, even with
 * the SHA extensions, a core does about 1.8 GB/s; 32 in the lanes of two registers do about 6
 * (measured on the same core, see docs/performance.md). The rounds are FIPS 180-4
 * section 6.2.2 as written; tests compare every result with hashlib. In C rather than Python
 * too: the loops that stat, open, read and check each file, so that a small file costs its
 * system calls and little more.
 */
#define PY_SSIZE_T_CLEAN
#define Py_LIMITED_API 0x030B0000
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define LANES_BUILT 1
#include <errno.h>
#include <fcntl.h>
#include <immintrin.h>
#include <sys/stat.h>
#include <unistd.h>
#else
#define LANES_BUILT 0
#endif

#define LANES 32 /* two groups of the 16 32-bit lanes of a 512-bit register */
#define BLOCK 64
#define CHUNK (128 * 1024) /* of a file, read into its lane's part of the arena at a time */
/* The lanes' parts of the arena are not a power of two apart: their blocks would share cache sets. */
#define LANE_SPAN (CHUNK + 4 * BLOCK)

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
/* FIPS 180-4 6.2.2 step 1 (the message schedule, in place in a ring of 16 words) and step 3. */
#define SCHEDULE(w, t)                                                                              \
    do {                                                                                            \
        __m512i w15 = w[((t) - 15) & 15], w2 = w[((t) - 2) & 15];                                   \
        w[(t) & 15] = ADD(ADD(w[(t) & 15], XOR3(ROR(w15, 7), ROR(w15, 18), _mm512_srli_epi32(w15, 3))), \
                          ADD(w[((t) - 7) & 15], XOR3(ROR(w2, 17), ROR(w2, 19), _mm512_srli_epi32(w2, 10)))); \
    } while (0)
#define ROUND(a, b, c, d, e, f, g, h, wk)                                                      \
    do {                                                                                       \
        __m512i t1 = ADD(ADD(h, XOR3(ROR(e, 6), ROR(e, 11), ROR(e, 25))), ADD(CH(e, f, g), wk)); \
        __m512i t2 = ADD(XOR3(ROR(a, 2), ROR(a, 13), ROR(a, 22)), MAJ(a, b, c));                \
        h = g;                                                                                 \
        g = f;                                                                                 \
        f = e;                                                                                 \
        e = ADD(d, t1);                                                                        \
        d = c;                                                                                 \
        c = b;                                                                                 \
        b = a;                                                                                 \
        a = ADD(t1, t2);                                                                       \
    } while (0)

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

/* One 64-byte block of each of 32 lanes into that lane's state: two groups of 16, interleaved so
 * that each group's dependent rounds fill the other's gaps (measured: 1.5 to 1.7 times one group). */
AVX512 static void compress(__m512i state[16], const uint8_t *const blocks[LANES]) {
    const __m512i big_endian = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
    __m512i w[16], x[16];
    for (int i = 0; i < 16; i++) {
        w[i] = _mm512_shuffle_epi8(_mm512_loadu_si512(blocks[i]), big_endian);
        x[i] = _mm512_shuffle_epi8(_mm512_loadu_si512(blocks[16 + i]), big_endian);
    }
    transpose(w);
    transpose(x);
    __m512i a = state[0], b = state[1], c = state[2], d = state[3];
    __m512i e = state[4], f = state[5], g = state[6], h = state[7];
    __m512i A = state[8], B = state[9], C = state[10], D = state[11];
    __m512i E = state[12], F = state[13], G = state[14], H = state[15];
    for (int t = 0; t < 64; t++) {
        __m512i k = _mm512_set1_epi32((int)K[t]);
        if (t >= 16) {
            SCHEDULE(w, t);
            SCHEDULE(x, t);
        }
        ROUND(a, b, c, d, e, f, g, h, ADD(w[t & 15], k));
        ROUND(A, B, C, D, E, F, G, H, ADD(x[t & 15], k));
    }
    __m512i sums[16] = {a, b, c, d, e, f, g, h, A, B, C, D, E, F, G, H};
    for (int i = 0; i < 16; i++) {
        state[i] = ADD(state[i], sums[i]);
    }
}

/* A message to hash: bytes in memory, or a file read through its lane's part of the arena. */
typedef struct {
    const uint8_t *memory; /* NULL for a file */
    const char *path;
    int64_t size;  /* its length; for a file, as listed */
    int64_t mtime; /* for a file, as listed */
    Py_ssize_t index; /* its place in the output */
} Source;

typedef struct {
    const Source *source; /* NULL: idle */
    int descriptor;       /* the file while it is read, else -1 */
    int64_t read;         /* bytes of the file read so far */
    uint8_t *buffer;      /* this lane's CHUNK bytes of the arena */
    const uint8_t *data;  /* the whole blocks to hash now */
    size_t blocks;        /* in `data` */
    size_t total;         /* `blocks`, and the tail's once the message is complete */
    size_t next;          /* the next block: in `data`, then in `tail` */
    uint8_t tail[2 * BLOCK];
} Lane;

typedef union {
    __m512i vectors[16];     /* group 0's a..h, then group 1's */
    uint32_t words[16][16];
} State;

#define WORD(state, i, lane) ((state)[8 * ((lane) / 16) + (i)][(lane) % 16])

static int longest_first(const void *left, const void *right) {
    int64_t a = ((const Source *)left)->size, b = ((const Source *)right)->size;
    return a < b ? 1 : a > b ? -1 : 0;
}

/* The message is complete: its last `count` (< 64) bytes, 0x80, zeros and its length in bits. */
static void end_with(Lane *lane, const uint8_t *rest, size_t count) {
    size_t tail_blocks = count + 9 <= BLOCK ? 1 : 2;
    uint64_t bits = (uint64_t)lane->source->size * 8;
    memset(lane->tail, 0, sizeof lane->tail);
    if (count) {
        memcpy(lane->tail, rest, count);
    }
    lane->tail[count] = 0x80;
    for (int k = 0; k < 8; k++) {
        lane->tail[tail_blocks * BLOCK - 1 - k] = (uint8_t)(bits >> (8 * k));
    }
    lane->total = lane->blocks + tail_blocks;
}

static void finish(uint32_t state[16][16], int number, uint8_t *digest) {
    for (int i = 0; i < 8; i++) {
        uint32_t word = WORD(state, i, number);
        digest[4 * i] = (uint8_t)(word >> 24);
        digest[4 * i + 1] = (uint8_t)(word >> 16);
        digest[4 * i + 2] = (uint8_t)(word >> 8);
        digest[4 * i + 3] = (uint8_t)word;
    }
}

static int64_t mtime_ns(const struct stat *listed) {
    return (int64_t)listed->st_mtim.tv_sec * 1000000000 + listed->st_mtim.tv_nsec;
}

/* Up to `wanted` bytes, stopping early at the end of the file or once `expected` are read. Always
 * reads at least once: a file listed with fewer bytes than it holds (procfs, FUSE, stale network
 * attributes) then shows its extra byte, because `wanted` reaches one past the listed end. */
static int64_t read_fully(int descriptor, uint8_t *into, int64_t wanted, int64_t expected) {
    int64_t done = 0;
    while (done < wanted) {
        ssize_t count = read(descriptor, into + done, (size_t)(wanted - done));
        if (count < 0 && errno == EINTR) {
            continue;
        }
        if (count < 0) {
            return -1;
        }
        if (count == 0) {
            break;
        }
        done += count;
        if (done == expected) { /* a short read that ends where the file was listed to end */
            break;
        }
    }
    return done;
}

/* The lane's next chunk of its file; 0, or -1 (the file closed) when it is not the regular file
 * that was listed (same size and mtime). Never reads more than one byte past the listed size, so growth is
 * seen and a FIFO or device put in its place (opened O_NONBLOCK) cannot keep the step reading. */
static int refill(Lane *lane) {
    const Source *source = lane->source;
    int64_t wanted = source->size + 1 - lane->read;
    wanted = wanted < CHUNK ? wanted : CHUNK;
    int64_t got = read_fully(lane->descriptor, lane->buffer, wanted, source->size - lane->read);
    if (got < 0) {
        close(lane->descriptor);
        lane->descriptor = -1;
        return -1;
    }
    lane->read += got;
    lane->data = lane->buffer;
    lane->next = 0;
    if (got == CHUNK && lane->read <= source->size) { /* a whole chunk; more may follow */
        lane->blocks = lane->total = CHUNK / BLOCK;
        return 0;
    }
    struct stat after;
    int status = fstat(lane->descriptor, &after);
    close(lane->descriptor);
    lane->descriptor = -1;
    if (lane->read != source->size || status != 0 || !S_ISREG(after.st_mode) || after.st_size != source->size ||
        mtime_ns(&after) != source->mtime) {
        return -1;
    }
    lane->blocks = (size_t)got / BLOCK;
    end_with(lane, lane->buffer + lane->blocks * BLOCK, (size_t)got % BLOCK);
    return 0;
}

/* The folder of the previous path, kept open: names are sorted, so a run of them shares a folder,
 * and each file is then looked up by its own name instead of by every folder on its path. */
typedef struct {
    const char *path; /* the previous path; its first `length` bytes name the open folder */
    size_t length;
    int descriptor; /* -1: none open */
} Folder;

/* A descriptor for the folder of `path` (AT_FDCWD for a bare name), -1 when it cannot be opened;
 * `name` is set to the rest of the path. */
static int folder_of(Folder *folder, const char *path, const char **name) {
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        *name = path;
        return AT_FDCWD;
    }
    size_t length = (size_t)(slash - path) + 1;
    *name = slash + 1;
    if (folder->descriptor >= 0 && folder->length == length && memcmp(folder->path, path, length) == 0) {
        return folder->descriptor;
    }
    if (folder->descriptor >= 0) {
        close(folder->descriptor);
    }
    folder->descriptor = -1;
    char *copy = malloc(length + 1);
    if (copy != NULL) {
        memcpy(copy, path, length);
        copy[length] = '\0';
        folder->descriptor = open(copy, O_PATH | O_DIRECTORY | O_CLOEXEC);
        free(copy);
    }
    folder->path = path;
    folder->length = length;
    return folder->descriptor;
}

static void close_folder(Folder *folder) {
    if (folder->descriptor >= 0) {
        close(folder->descriptor);
    }
}

/* Start `source` in the lane; -1 when it is a file that cannot be opened or read as listed. */
static int begin(Lane *lane, uint32_t state[16][16], int number, const Source *source, Folder *folder) {
    lane->source = source;
    lane->descriptor = -1;
    lane->read = 0;
    for (int i = 0; i < 8; i++) {
        WORD(state, i, number) = H0[i];
    }
    if (source->memory != NULL) {
        lane->data = source->memory;
        lane->blocks = (size_t)source->size / BLOCK;
        lane->next = 0;
        end_with(lane, source->memory + lane->blocks * BLOCK, (size_t)source->size % BLOCK);
        return 0;
    }
    const char *name;
    int parent = folder_of(folder, source->path, &name);
    lane->descriptor = parent == -1 ? -1 : openat(parent, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    return lane->descriptor < 0 ? -1 : refill(lane); /* a refused file is closed by refill */
}

/* Give the lane the next source that starts; 0 when none is left. A file that cannot be read as
 * listed is marked in `refused` (Python reads it again and names the problem). */
static int take(Lane *lane, uint32_t state[16][16], int number, const Source *sources, Py_ssize_t count,
                Py_ssize_t *taken, Folder *folder, uint8_t *refused) {
    while (*taken < count) {
        const Source *source = &sources[(*taken)++];
        if (begin(lane, state, number, source, folder) == 0) {
            return 1;
        }
        refused[source->index] = 1;
    }
    lane->source = NULL;
    return 0;
}

/* Every source's digest into out[32 * index], longest first, each lane taking the next source as
 * soon as its own is done, so that the lanes run out of work at about the same time. */
AVX512 static void digest_lanes(Source *sources, Py_ssize_t count, uint8_t *arena, uint8_t *out,
                                uint8_t *refused) {
    State state;
    Lane lanes[LANES];
    Folder folder = {NULL, 0, -1};
    Py_ssize_t taken = 0;
    int busy = 0;
    memset(&state, 0, sizeof state); /* idle lanes hash a zero block into a defined state */
    qsort(sources, (size_t)count, sizeof *sources, longest_first);
    for (int number = 0; number < LANES; number++) {
        lanes[number].buffer = arena ? arena + (size_t)number * LANE_SPAN : NULL;
        busy += take(&lanes[number], state.words, number, sources, count, &taken, &folder, refused);
    }
    while (busy) {
        /* A run of steps in which no lane reaches the end of its blocks in hand: each lane's next
         * block simply follows its last. */
        const uint8_t *blocks[LANES];
        size_t stride[LANES], run = SIZE_MAX;
        for (int number = 0; number < LANES; number++) {
            Lane *lane = &lanes[number];
            size_t left;
            if (lane->source == NULL) {
                blocks[number] = IDLE_BLOCK;
                stride[number] = 0;
                continue;
            }
            if (lane->next < lane->blocks) {
                blocks[number] = lane->data + lane->next * BLOCK;
                left = lane->blocks - lane->next;
            } else {
                blocks[number] = lane->tail + (lane->next - lane->blocks) * BLOCK;
                left = lane->total - lane->next;
            }
            stride[number] = BLOCK;
            run = left < run ? left : run;
        }
        for (size_t step = 0; step < run; step++) {
            compress(state.vectors, blocks);
            for (int number = 0; number < LANES; number++) {
                blocks[number] += stride[number];
            }
        }
        for (int number = 0; number < LANES; number++) {
            Lane *lane = &lanes[number];
            if (lane->source == NULL || (lane->next += run) < lane->total) {
                continue;
            }
            if (lane->total > lane->blocks) { /* the tail is hashed: the message is done */
                finish(state.words, number, out + 32 * lane->source->index);
            } else if (refill(lane) == 0) {
                continue;
            } else {
                refused[lane->source->index] = 1;
            }
            busy -= 1 - take(lane, state.words, number, sources, count, &taken, &folder, refused);
        }
    }
    close_folder(&folder);
}

static int supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
#endif

#if LANES_BUILT
/* The file-system encodings of a list of str paths; `owners` keeps them alive. */
static const char **encode_paths(PyObject *paths, PyObject **owners, Py_ssize_t count) {
    const char **encoded = PyMem_Calloc((size_t)count + 1, sizeof *encoded);
    if (encoded == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        owners[i] = PyUnicode_EncodeFSDefault(PyList_GetItem(paths, i));
        if (owners[i] == NULL) {
            PyMem_Free(encoded);
            return NULL;
        }
        encoded[i] = PyBytes_AsString(owners[i]);
    }
    return encoded;
}

static void release_paths(PyObject **owners, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_XDECREF(owners[i]);
    }
    PyMem_Free(owners);
}

static Py_ssize_t stat_loop(const char **paths, Py_ssize_t count, int64_t *sizes, int64_t *mtimes) {
    Folder folder = {NULL, 0, -1};
    Py_ssize_t i = 0;
    for (; i < count; i++) {
        const char *name;
        int parent = folder_of(&folder, paths[i], &name);
        struct stat listed;
        if (parent == -1 || fstatat(parent, name, &listed, 0) != 0 || !S_ISREG(listed.st_mode)) {
            break;
        }
        sizes[i] = (int64_t)listed.st_size;
        mtimes[i] = mtime_ns(&listed);
    }
    close_folder(&folder);
    return i;
}

static PyObject *stat_files(PyObject *module, PyObject *paths) {
    (void)module;
    if (!PyList_Check(paths)) {
        PyErr_SetString(PyExc_TypeError, "stat_files() takes a list of str paths");
        return NULL;
    }
    Py_ssize_t count = PyList_Size(paths);
    PyObject **owners = PyMem_Calloc((size_t)count + 1, sizeof *owners);
    int64_t *sizes = PyMem_Calloc((size_t)count + 1, sizeof *sizes);
    int64_t *mtimes = PyMem_Calloc((size_t)count + 1, sizeof *mtimes);
    const char **encoded = owners && sizes && mtimes ? encode_paths(paths, owners, count) : NULL;
    PyObject *result = NULL;
    if (encoded != NULL) {
        Py_ssize_t done;
        Py_BEGIN_ALLOW_THREADS
        done = stat_loop(encoded, count, sizes, mtimes);
        Py_END_ALLOW_THREADS
        result = Py_BuildValue("y#y#n", (const char *)sizes, done * 8, (const char *)mtimes, done * 8, done);
        PyMem_Free(encoded);
    } else if (!PyErr_Occurred()) {
        PyErr_NoMemory();
    }
    if (owners) {
        release_paths(owners, count);
    }
    PyMem_Free(sizes);
    PyMem_Free(mtimes);
    return result;
}

static PyObject *digest_files(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *paths, *sizes_object, *mtimes_object, *arena_object;
    if (!PyArg_ParseTuple(args, "O!OOO", &PyList_Type, &paths, &sizes_object, &mtimes_object, &arena_object)) {
        return NULL;
    }
    if (!supported()) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU has no AVX-512; use hashlib");
        return NULL;
    }
    Py_ssize_t count = PyList_Size(paths);
    Py_buffer sizes = {0}, mtimes = {0}, arena = {0};
    PyObject **owners = NULL;
    const char **encoded = NULL;
    Source *sources = NULL;
    uint8_t *out = NULL, *refused = NULL;
    PyObject *result = NULL;
    if (PyObject_GetBuffer(sizes_object, &sizes, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(mtimes_object, &mtimes, PyBUF_SIMPLE) < 0) {
        goto done;
    }
    if (PyObject_GetBuffer(arena_object, &arena, PyBUF_WRITABLE) < 0) {
        goto done;
    }
    if (sizes.len != count * 8 || mtimes.len != count * 8 || arena.len < LANES * LANE_SPAN) {
        PyErr_SetString(PyExc_ValueError, "digest_files() needs an int64 size and mtime per path, and its arena");
        goto done;
    }
    owners = PyMem_Calloc((size_t)count + 1, sizeof *owners);
    sources = PyMem_Calloc((size_t)count + 1, sizeof *sources);
    out = PyMem_Calloc(32 * (size_t)count + 1, 1);
    refused = PyMem_Calloc((size_t)count + 1, 1);
    if (owners == NULL || sources == NULL || out == NULL || refused == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    encoded = encode_paths(paths, owners, count);
    if (encoded != NULL) {
        for (Py_ssize_t i = 0; i < count; i++) {
            sources[i] = (Source){NULL, encoded[i], ((int64_t *)sizes.buf)[i], ((int64_t *)mtimes.buf)[i], i};
        }
        Py_BEGIN_ALLOW_THREADS
        digest_lanes(sources, count, arena.buf, out, refused);
        Py_END_ALLOW_THREADS
        result = Py_BuildValue("y#y#", (const char *)out, count * 32, (const char *)refused, count);
        PyMem_Free(encoded);
    }
done:
    if (owners) {
        release_paths(owners, count);
    }
    PyMem_Free(sources);
    PyMem_Free(out);
    PyMem_Free(refused);
    if (sizes.obj) {
        PyBuffer_Release(&sizes);
    }
    if (mtimes.obj) {
        PyBuffer_Release(&mtimes);
    }
    if (arena.obj) {
        PyBuffer_Release(&arena);
    }
    return result;
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
    Source *table = PyMem_Calloc((size_t)count + 1, sizeof *table);
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
        table[held] = (Source){views[held].buf, NULL, (int64_t)views[held].len, 0, held};
    }
    uint8_t *out = (uint8_t *)PyBytes_AsString(result);
    Py_BEGIN_ALLOW_THREADS
    digest_lanes(table, count, NULL, out, NULL); /* memory is never refused */
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
#if LANES_BUILT
    {"stat_files", stat_files, METH_O, "Sizes and mtimes of regular files, up to the first that is not."},
    {"digest_files", digest_files, METH_VARARGS, "Digests of listed files, and which were not as listed."},
#endif
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
