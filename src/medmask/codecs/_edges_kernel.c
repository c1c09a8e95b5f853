/*
 * Kernel of the medmask.edges codec (docs/codecs.md, section 6): edges of every row, each
 * predicted from the reference row (the same row of the previous slice).
 *
 * encode(values, (nz, ny, nx), itemsize, K)
 *     -> (gaps, fates, positions, values, max_delta, max_value, stats)
 *     stats: 40-byte records (value u64, count u64, z0 z1 y0 y1 x0 x1 u32) of 1- and 2-byte
 *     arrays, else None
 * decode(gaps, fates, position_planes, p, value_planes or None, w, itemsize, K, vmax, out)
 *     -> None; fates is a tuple of the 2K+2 fate sections
 *
 * Pure C99 on the buffer protocol; the loops run without the GIL, so chunks encode and
 * decode in parallel threads. medmask/codecs/_edges.py holds the same decoder in numpy and
 * is the reference; this file must give identical results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_K 7

typedef struct {
    uint64_t v;
    uint32_t x;
    uint8_t cls;
} edge_t;

/* Edges of one slice: rows back to back, row y at e[row[y] .. row[y + 1]). */
typedef struct {
    edge_t *e;
    size_t n, cap;
    size_t *row;
} slice_t;

typedef struct {
    uint8_t *p;
    size_t n, cap;
} bytes_t;

static int slice_init(slice_t *s, uint32_t ny) {
    s->e = NULL;
    s->n = s->cap = 0;
    s->row = (size_t *)calloc((size_t)ny + 1, sizeof(size_t));
    return s->row != NULL;
}

static void slice_free(slice_t *s) {
    free(s->e);
    free(s->row);
}

static int slice_push(slice_t *s, uint32_t x, uint64_t v, uint8_t cls) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        edge_t *e = (edge_t *)realloc(s->e, cap * sizeof(edge_t));
        if (!e) return 0;
        s->e = e;
        s->cap = cap;
    }
    s->e[s->n].x = x;
    s->e[s->n].v = v;
    s->e[s->n].cls = cls;
    s->n++;
    return 1;
}

static int bytes_reserve(bytes_t *b, size_t more) {
    if (b->n + more > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 4096;
        while (cap < b->n + more) cap *= 2;
        uint8_t *p = (uint8_t *)realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    return 1;
}

static int bytes_put(bytes_t *b, const void *src, size_t len) {
    if (!bytes_reserve(b, len)) return 0;
    memcpy(b->p + b->n, src, len);
    b->n += len;
    return 1;
}

static int put_gap(bytes_t *b, uint32_t count) {
    uint8_t c;
    if (count < 255) {
        c = (uint8_t)count;
        return bytes_put(b, &c, 1);
    }
    uint8_t esc[5] = {255, (uint8_t)count, (uint8_t)(count >> 8), (uint8_t)(count >> 16),
                      (uint8_t)(count >> 24)};
    return bytes_put(b, esc, 5);
}

static inline uint64_t load(const uint8_t *row, size_t x, int itemsize) {
    switch (itemsize) {
        case 1: return row[x];
        case 2: { uint16_t v; memcpy(&v, row + 2 * x, 2); return v; }
        case 4: { uint32_t v; memcpy(&v, row + 4 * x, 4); return v; }
        default: { uint64_t v; memcpy(&v, row + 8 * x, 8); return v; }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* encoder                                                                                  */

/* Per-value voxel count and inclusive bounding box, for 1- and 2-byte arrays (a table
 * indexed by value); the .msk writer stores them, so computing them here saves a pass. */
typedef struct {
    uint64_t count;
    uint32_t lo[3], hi[3];
} stat_t;

typedef struct {
    bytes_t gaps, pos, val;
    bytes_t fates[2 * MAX_K + 2];
    size_t nfates[2 * MAX_K + 2];
    uint32_t max_delta;
    uint64_t max_value;
    stat_t *stats; /* NULL: not computed */
    size_t nstats;
} enc_out_t;

static inline void stat_run(stat_t *s, uint32_t z, uint32_t y, uint32_t x0, uint32_t x1) {
    /* the run [x0, x1) of one row */
    if (s->count == 0) {
        s->lo[0] = s->hi[0] = z;
        s->lo[1] = s->hi[1] = y;
        s->lo[2] = x0;
        s->hi[2] = x1 - 1;
    } else {
        if (z < s->lo[0]) s->lo[0] = z;
        if (z > s->hi[0]) s->hi[0] = z;
        if (y < s->lo[1]) s->lo[1] = y;
        if (y > s->hi[1]) s->hi[1] = y;
        if (x0 < s->lo[2]) s->lo[2] = x0;
        if (x1 - 1 > s->hi[2]) s->hi[2] = x1 - 1;
    }
    s->count += x1 - x0;
}

static void row_stats(enc_out_t *o, const edge_t *e, size_t n, uint32_t z, uint32_t y,
                      uint32_t nx) {
    for (size_t k = 0; k < n; k++) {
        if (e[k].v == 0) continue;
        uint32_t end = (k + 1 < n) ? e[k + 1].x : nx;
        stat_run(&o->stats[e[k].v], z, y, e[k].x, end);
    }
}

static int put_fate(enc_out_t *o, int cls, uint8_t code) {
    bytes_t *b = &o->fates[cls];
    if (o->nfates[cls] % 2 == 0) {
        if (!bytes_put(b, &code, 1)) return 0;
    } else {
        b->p[b->n - 1] |= (uint8_t)(code << 4);
    }
    o->nfates[cls]++;
    return 1;
}

/* Edges of one row into s (appended). */
static int row_edges(slice_t *s, const uint8_t *row, uint32_t nx, int itemsize) {
    uint64_t prev = 0;
    if (itemsize == 1) {
        for (uint32_t x = 0; x < nx; x++) {
            if (row[x] != prev) {
                prev = row[x];
                if (!slice_push(s, x, prev, 0)) return 0;
            }
        }
        return 1;
    }
    for (uint32_t x = 0; x < nx; x++) {
        uint64_t v = load(row, x, itemsize);
        if (v != prev) {
            prev = v;
            if (!slice_push(s, x, v, 0)) return 0;
        }
    }
    return 1;
}

/* Code the edges cur[0..n) of one row against ref[0..m) (greedy, in order). */
static int code_row(enc_out_t *o, edge_t *cur, size_t n, const edge_t *ref, size_t m, int K) {
    size_t i = 0, j = 0;
    uint32_t gap = 0;
    int64_t last = -1;
    const uint8_t inserted = (uint8_t)(2 * K + 1);
    while (i < n || j < m) {
        if (i < n && j < m) {
            int64_t d = (int64_t)cur[i].x - (int64_t)ref[j].x;
            if (d >= -K && d <= K && cur[i].v == ref[j].v) {
                if (!put_gap(&o->gaps, gap) || !put_fate(o, ref[j].cls, (uint8_t)(d + K)))
                    return 0;
                gap = 0;
                cur[i].cls = (uint8_t)(d + K);
                last = cur[i].x;
                i++;
                j++;
                continue;
            }
        }
        if (j < m && (i >= n || ref[j].x <= cur[i].x)) {
            if (!put_gap(&o->gaps, gap) || !put_fate(o, ref[j].cls, inserted)) return 0;
            gap = 0;
            j++;
            continue;
        }
        uint32_t delta = (uint32_t)((int64_t)cur[i].x - last);
        if (!bytes_put(&o->pos, &delta, 4) || !bytes_put(&o->val, &cur[i].v, 8)) return 0;
        if (delta > o->max_delta) o->max_delta = delta;
        if (cur[i].v > o->max_value) o->max_value = cur[i].v;
        cur[i].cls = inserted;
        last = cur[i].x;
        gap++;
        i++;
    }
    return put_gap(&o->gaps, gap);
}

static int encode_core(const uint8_t *data, int itemsize, uint32_t nz, uint32_t ny,
                       uint32_t nx, int K, enc_out_t *o) {
    slice_t a, b;
    int ok = 0;
    if (!slice_init(&a, ny)) return 0;
    if (!slice_init(&b, ny)) { slice_free(&a); return 0; }
    slice_t *prev = &a, *cur = &b;
    size_t row_bytes = (size_t)nx * itemsize;
    for (uint32_t z = 0; z < nz; z++) {
        cur->n = 0;
        for (uint32_t y = 0; y < ny; y++) {
            const uint8_t *row = data + ((size_t)z * ny + y) * row_bytes;
            size_t first = cur->n;
            cur->row[y] = first;
            if (!row_edges(cur, row, nx, itemsize)) goto done;
            const edge_t *ref = NULL;
            size_t m = 0;
            if (z > 0) {
                ref = prev->e + prev->row[y];
                m = prev->row[y + 1] - prev->row[y];
            } else if (y > 0) {
                ref = cur->e + cur->row[y - 1];
                m = first - cur->row[y - 1];
            }
            if (o->stats) row_stats(o, cur->e + first, cur->n - first, z, y, nx);
            if (!code_row(o, cur->e + first, cur->n - first, ref, m, K)) goto done;
        }
        cur->row[ny] = cur->n;
        slice_t *t = prev;
        prev = cur;
        cur = t;
    }
    ok = 1;
done:
    slice_free(&a);
    slice_free(&b);
    return ok;
}

static PyObject *py_encode(PyObject *self, PyObject *args) {
    Py_buffer buf;
    unsigned int nz, ny, nx;
    int K, itemsize;
    if (!PyArg_ParseTuple(args, "y*(III)ii", &buf, &nz, &ny, &nx, &itemsize, &K)) return NULL;
    if (K < 1 || K > MAX_K || !(itemsize == 1 || itemsize == 2 || itemsize == 4 || itemsize == 8)
        || (size_t)buf.len != (size_t)nz * ny * nx * itemsize) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "edges encode: bad arguments");
        return NULL;
    }
    enc_out_t o;
    memset(&o, 0, sizeof(o));
    int ok = 1;
    if (itemsize <= 2) {
        o.nstats = (size_t)1 << (8 * itemsize);
        o.stats = (stat_t *)calloc(o.nstats, sizeof(stat_t));
        ok = o.stats != NULL;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        ok = encode_core((const uint8_t *)buf.buf, itemsize, nz, ny, nx, K, &o);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&buf);
    PyObject *result = NULL;
    PyObject *stats = NULL;
    if (ok && o.stats) {
        /* present values as records: value u64, count u64, z0 z1 y0 y1 x0 x1 u32 */
        size_t present = 0;
        for (size_t v = 1; v < o.nstats; v++) present += o.stats[v].count != 0;
        stats = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(present * 40));
        if (!stats) ok = 0;
        else {
            uint8_t *p = (uint8_t *)PyBytes_AS_STRING(stats);
            for (size_t v = 1; v < o.nstats; v++) {
                const stat_t *t = &o.stats[v];
                if (!t->count) continue;
                uint64_t value = v;
                uint32_t box[6] = {t->lo[0], t->hi[0], t->lo[1], t->hi[1], t->lo[2], t->hi[2]};
                memcpy(p, &value, 8);
                memcpy(p + 8, &t->count, 8);
                memcpy(p + 16, box, 24);
                p += 40;
            }
        }
    } else if (ok) {
        stats = Py_None;
        Py_INCREF(stats);
    }
    free(o.stats);
    if (!ok) {
        Py_XDECREF(stats);
        PyErr_NoMemory();
    } else {
        PyObject *fates = PyTuple_New(2 * K + 2);
        if (fates) {
            for (int c = 0; c < 2 * K + 2; c++) {
                PyObject *f = PyBytes_FromStringAndSize(
                    o.fates[c].p ? (const char *)o.fates[c].p : "", (Py_ssize_t)o.fates[c].n);
                if (!f) { Py_CLEAR(fates); break; }
                PyTuple_SET_ITEM(fates, c, f);
            }
        }
        if (fates) {
            result = Py_BuildValue("(y#Ny#y#kKN)", o.gaps.p ? (const char *)o.gaps.p : "",
                                   (Py_ssize_t)o.gaps.n, fates,
                                   o.pos.p ? (const char *)o.pos.p : "", (Py_ssize_t)o.pos.n,
                                   o.val.p ? (const char *)o.val.p : "", (Py_ssize_t)o.val.n,
                                   (unsigned long)o.max_delta,
                                   (unsigned long long)o.max_value, stats);
            stats = NULL; /* the tuple owns it */
        }
        Py_XDECREF(stats);
    }
    free(o.gaps.p);
    free(o.pos.p);
    free(o.val.p);
    for (int c = 0; c < 2 * MAX_K + 2; c++) free(o.fates[c].p);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* decoder                                                                                  */
/*
 * No edge list is kept: the reference row is already painted in the output (row y - 1 of
 * slice 0, or row y of slice z - 1), so its edges are found again by scanning it for value
 * changes. Only each edge's class (one byte) is kept, in per-slice arrays allocated once per
 * decode and indexed by running counters (nothing is reallocated while a row refers to it).
 * Streams may not hold an edge equal to the value before it, so the edges found by the scan
 * are exactly the edges the row was painted from.
 */

typedef struct {
    const uint8_t *p;
    size_t n, at;
} reader_t;

typedef struct {
    reader_t gaps;
    reader_t fates[2 * MAX_K + 2];
    size_t fate_count[2 * MAX_K + 2];
    size_t fate_at[2 * MAX_K + 2];
    const uint8_t *pos; /* p byte planes of npos deltas */
    size_t npos, pos_at;
    int p;
    const uint8_t *val; /* w byte planes of npos values; NULL (w = 0): values toggle 0/1 */
    int w;
    uint64_t vmax;
    int K, itemsize;
    uint32_t nz, ny, nx;
    uint8_t *out;
    Py_ssize_t sz, sy;
    uint8_t *cls[2];  /* edge classes of the previous and the current slice */
    uint32_t *xs[2];  /* their positions, each row ended by NO_EDGE; NULL: scan the output */
    size_t cap;       /* entries of each: no slice has more */
} dec_t;

static const char *read_gap(dec_t *d, uint32_t *count) {
    reader_t *r = &d->gaps;
    if (r->at >= r->n) return "Expected a gap count. Got the end of the gaps section.";
    uint8_t c = r->p[r->at++];
    if (c < 255) { *count = c; return NULL; }
    if (r->n - r->at < 4) return "Expected 4 bytes after a 255 gap code. Got the end.";
    const uint8_t *q = r->p + r->at;
    *count = (uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) | ((uint32_t)q[3] << 24);
    r->at += 4;
    if (*count < 255) return "Expected an escaped gap count >= 255. Got a smaller one.";
    return NULL;
}

static const char *read_fate(dec_t *d, int cls, int *code) {
    size_t k = d->fate_at[cls];
    if (k >= d->fate_count[cls]) return "Expected a fate code. Got the end of its section.";
    uint8_t byte = d->fates[cls].p[k / 2];
    *code = (k % 2) ? (byte >> 4) : (byte & 15);
    d->fate_at[cls] = k + 1;
    return NULL;
}

/* Element i of `width` little-endian byte planes of n elements each. */
static inline uint64_t plane_get(const uint8_t *planes, size_t n, int width, size_t i) {
    uint64_t v = 0;
    for (int k = 0; k < width; k++) v |= (uint64_t)planes[(size_t)k * n + i] << (8 * k);
    return v;
}

/* row[from, to) = v */
static void fill_run(uint8_t *row, uint32_t from, uint32_t to, uint64_t v, int itemsize) {
    if (to <= from) return;
    switch (itemsize) {
        case 1: memset(row + from, (int)v, to - from); return;
#define FILL(T)                                                                \
    {                                                                          \
        T *r = (T *)row, t = (T)v;                                             \
        for (uint32_t x = from; x < to; x++) r[x] = t;                         \
        return;                                                                \
    }
        case 2: FILL(uint16_t)
        case 4: FILL(uint32_t)
        default: FILL(uint64_t)
#undef FILL
    }
}

/* The first x >= from where row[x] != prev (nx if none), 8 bytes at a time. */
static uint32_t next_change(const uint8_t *row, uint32_t from, uint32_t nx, uint64_t prev,
                            int itemsize) {
    uint32_t x = from;
    uint32_t per_word = (uint32_t)(8 / itemsize);
    uint64_t pattern = prev;
    for (int s = 8 * itemsize; s < 64; s *= 2) pattern |= pattern << s;
    while (x < nx && (x % per_word)) {
        if (load(row, x, itemsize) != prev) return x;
        x++;
    }
    while (nx - x >= per_word) {
        uint64_t word;
        memcpy(&word, row + (size_t)x * itemsize, 8);
        if (word != pattern) break;
        x += per_word;
    }
    for (; x < nx; x++)
        if (load(row, x, itemsize) != prev) return x;
    return nx;
}

#define NO_EDGE 0xFFFFFFFFu

/* Decode one row into `row` against the painted reference row `ref` (NULL: none), whose edge
 * classes (and positions, when kept) are read from rcls[*rat ...] (rxs); the row's go to
 * ccls[*cat ...] (cxs). Without kept positions the reference edges are found by scanning
 * `ref`; with them, only their values are read from it. */
static const char *decode_row(dec_t *d, uint8_t *row, const uint8_t *ref, const uint8_t *rcls,
                              const uint32_t *rxs, size_t *rat, uint8_t *ccls, uint32_t *cxs,
                              size_t *cat) {
    const int K = d->K, itemsize = d->itemsize;
    const uint32_t nx = d->nx;
    const uint8_t inserted = (uint8_t)(2 * K + 1);
    int64_t last = -1;
    uint64_t value = 0;   /* of the last edge of this row (0 before the first) */
    uint32_t filled = 0;  /* row[0, filled) is painted */
    uint32_t scan = 0;    /* the reference row is scanned up to here */
    uint64_t ref_value = 0;
    const char *err;
    for (;;) {
        uint32_t count;
        if ((err = read_gap(d, &count))) return err;
        if (count > d->npos - d->pos_at) return "Expected as many insertions as positions. Got more.";
        for (uint32_t t = 0; t < count; t++) {
            uint64_t delta = plane_get(d->pos, d->npos, d->p, d->pos_at);
            uint64_t v = d->val ? plane_get(d->val, d->npos, d->w, d->pos_at) : (value ^ 1u);
            d->pos_at++;
            int64_t x = last + (int64_t)delta;
            if (delta == 0 || x >= (int64_t)nx)
                return "Expected inserted edges inside the row, after the previous one. Got one outside.";
            if (v > d->vmax) return "Expected edge values that fit the dtype. Got a larger one.";
            if (v == value) return "Expected edges that change the value. Got an edge equal to the value before it.";
            if (*cat >= d->cap) return "Expected at most one edge per voxel. Got more.";
            fill_run(row, filled, (uint32_t)x, value, itemsize);
            filled = (uint32_t)x;
            if (cxs) cxs[*cat] = (uint32_t)x;
            ccls[(*cat)++] = inserted;
            last = x;
            value = v;
        }
        if (!ref) break;
        uint32_t rx;
        if (rxs) {
            if (*rat >= d->cap) return "Expected at most one edge per voxel. Got more.";
            rx = rxs[*rat];
            if (rx == NO_EDGE) {
                (*rat)++;
                break;
            }
        } else {
            rx = next_change(ref, scan, nx, ref_value, itemsize);
            if (rx >= nx) break;
            scan = rx + 1;
        }
        ref_value = load(ref, rx, itemsize);
        if (*rat >= d->cap) return "Expected at most one edge per voxel. Got more.";
        int code;
        if ((err = read_fate(d, rcls[(*rat)++], &code))) return err;
        if (code <= 2 * K) {
            int64_t x = (int64_t)rx + code - K;
            if (x <= last || x >= (int64_t)nx)
                return "Expected matched edges inside the row, after the previous one. Got one outside.";
            if (ref_value == value) return "Expected edges that change the value. Got an edge equal to the value before it.";
            if (*cat >= d->cap) return "Expected at most one edge per voxel. Got more.";
            fill_run(row, filled, (uint32_t)x, value, itemsize);
            filled = (uint32_t)x;
            if (cxs) cxs[*cat] = (uint32_t)x;
            ccls[(*cat)++] = (uint8_t)code;
            last = x;
            value = ref_value;
        } else if (code != inserted) {
            return "Expected fate codes 0..2K+1. Got a larger one.";
        }
    }
    fill_run(row, filled, nx, value, itemsize);
    if (cxs) {
        if (*cat >= d->cap) return "Expected at most one edge per voxel. Got more.";
        cxs[(*cat)++] = NO_EDGE;
    }
    return NULL;
}

static const char *decode_core(dec_t *d) {
    const char *err = NULL;
    size_t rat = 0, cat = 0;
    int cur = 0;
    for (uint32_t z = 0; z < d->nz && !err; z++) {
        uint8_t *slice = d->out + (Py_ssize_t)z * d->sz;
        uint8_t *ccls = d->cls[cur];
        cat = 0;
        rat = 0;
        size_t row_start = 0; /* slice 0: where the previous row's classes start */
        for (uint32_t y = 0; y < d->ny; y++) {
            uint8_t *row = slice + (Py_ssize_t)y * d->sy;
            uint32_t *cxs = d->xs[cur];
            if (z > 0) {
                err = decode_row(d, row, row - d->sz, d->cls[1 - cur], d->xs[1 - cur], &rat,
                                 ccls, cxs, &cat);
            } else if (y > 0) {
                size_t first = cat;
                rat = row_start;
                err = decode_row(d, row, row - d->sy, ccls, cxs, &rat, ccls, cxs, &cat);
                row_start = first;
            } else {
                err = decode_row(d, row, NULL, NULL, NULL, &rat, ccls, cxs, &cat);
            }
            if (err) break;
        }
        if (d->cls[1]) cur = 1 - cur;
    }
    if (err) return err;
    if (d->gaps.at != d->gaps.n) return "Expected the gaps section to end with the last row. Got more bytes.";
    if (d->pos_at != d->npos) return "Expected one inserted edge per position. Got unused positions.";
    return NULL;
}

static PyObject *py_decode(PyObject *self, PyObject *args) {
    Py_buffer gaps, pos;
    Py_buffer val = {0}, out = {0};
    Py_buffer fb[2 * MAX_K + 2];
    PyObject *fates, *val_obj, *out_obj;
    int K, itemsize, p, w, nf = 0;
    unsigned long long vmax;
    if (!PyArg_ParseTuple(args, "y*O!y*iOiiiKO", &gaps, &PyTuple_Type, &fates, &pos, &p,
                          &val_obj, &w, &itemsize, &K, &vmax, &out_obj))
        return NULL;
    const char *err = NULL;
    int nomem = 0;
    dec_t d;
    memset(&d, 0, sizeof(d));
    if (K < 1 || K > MAX_K || PyTuple_GET_SIZE(fates) != 2 * K + 2) {
        err = "Expected 2K+2 fate sections for a shift range K in 1..7.";
        goto release;
    }
    for (; nf < 2 * K + 2; nf++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(fates, nf), &fb[nf], PyBUF_SIMPLE) < 0) goto fail;
        d.fates[nf].p = (const uint8_t *)fb[nf].buf;
        d.fates[nf].n = (size_t)fb[nf].len;
        d.fate_count[nf] = 2 * (size_t)fb[nf].len;
    }
    if (!(p == 1 || p == 2 || p == 4) || (size_t)pos.len % (size_t)p) {
        err = "Expected positions as 1, 2 or 4 byte planes.";
        goto release;
    }
    d.npos = (size_t)pos.len / (size_t)p;
    if (val_obj != Py_None) {
        if (PyObject_GetBuffer(val_obj, &val, PyBUF_SIMPLE) < 0) goto fail;
        if (!(w == 1 || w == 2 || w == 4 || w == 8) || (size_t)val.len != d.npos * (size_t)w) {
            err = "Expected one value per inserted edge. Got another count.";
            goto release;
        }
        d.val = (const uint8_t *)val.buf;
    }
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_RECORDS) < 0) goto fail;
    if (out.ndim != 3 || out.itemsize != itemsize || out.strides[2] != itemsize
        || !(itemsize == 1 || itemsize == 2 || itemsize == 4 || itemsize == 8)
        || out.shape[0] > 0xFFFFFFFFL || out.shape[1] > 0xFFFFFFFFL || out.shape[2] > 0xFFFFFFFFL) {
        err = "Expected a writable 3-D output with contiguous rows of the stream's item size.";
        goto release;
    }
    d.gaps.p = (const uint8_t *)gaps.buf;
    d.gaps.n = (size_t)gaps.len;
    d.pos = (const uint8_t *)pos.buf;
    d.p = p;
    d.w = w;
    d.vmax = vmax;
    d.K = K;
    d.itemsize = itemsize;
    d.nz = (uint32_t)out.shape[0];
    d.ny = (uint32_t)out.shape[1];
    d.nx = (uint32_t)out.shape[2];
    d.out = (uint8_t *)out.buf;
    d.sz = out.strides[0];
    d.sy = out.strides[1];
    if (d.nz && d.ny && d.nx) {
        /* a slice holds at most Y*X edges, and at most one per insertion or fate code */
        size_t codes = 0;
        for (int c = 0; c < 2 * K + 2; c++) codes += d.fate_count[c];
        size_t slice = (size_t)d.ny * d.nx;
        size_t edges = d.npos + codes < slice ? d.npos + codes : slice;
        int nslices = d.nz > 1 ? 2 : 1;
        /* Positions are kept (4 bytes an edge and a row end) when that costs at most the
         * output: every real segmentation. Else (dense or hostile streams) the reference
         * edges are found by scanning the painted reference row: class bytes only. */
        size_t entries = edges + d.ny;
        size_t nbytes = (size_t)d.nz * slice * (size_t)itemsize;
        int keep = entries <= nbytes / 5 / (size_t)nslices;
        d.cap = keep ? entries : edges;
        for (int s = 0; s < nslices; s++) {
            d.cls[s] = (uint8_t *)malloc(d.cap ? d.cap : 1);
            if (keep) d.xs[s] = (uint32_t *)malloc((d.cap ? d.cap : 1) * sizeof(uint32_t));
        }
        if (!d.cls[0] || (d.nz > 1 && !d.cls[1]) || (keep && (!d.xs[0] || (d.nz > 1 && !d.xs[1])))) {
            nomem = 1;
        } else {
            Py_BEGIN_ALLOW_THREADS
            err = decode_core(&d);
            Py_END_ALLOW_THREADS
        }
        free(d.cls[0]);
        free(d.cls[1]);
        free(d.xs[0]);
        free(d.xs[1]);
    } else {
        err = "Expected a non-empty array for an edges stream. Got a zero-size shape.";
    }
    if (!err && !nomem) {
        for (int c = 0; c < 2 * K + 2; c++) {
            size_t used = d.fate_at[c];
            if ((used + 1) / 2 != d.fates[c].n || (used % 2 && (d.fates[c].p[used / 2] >> 4))) {
                err = "Expected one fate code per reference edge. Got unused fate codes.";
                break;
            }
        }
    }
release:
    PyBuffer_Release(&gaps);
    PyBuffer_Release(&pos);
    for (int c = 0; c < nf; c++) PyBuffer_Release(&fb[c]);
    if (val.obj) PyBuffer_Release(&val);
    if (out.obj) PyBuffer_Release(&out);
    if (nomem) return PyErr_NoMemory();
    if (err) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&gaps);
    PyBuffer_Release(&pos);
    for (int c = 0; c < nf; c++) PyBuffer_Release(&fb[c]);
    if (val.obj) PyBuffer_Release(&val);
    if (out.obj) PyBuffer_Release(&out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"encode", py_encode, METH_VARARGS,
     "encode(values, (nz, ny, nx), itemsize, K) -> (gaps, fates, positions, values, "
     "max_delta, max_value, stats): stats of 1- and 2-byte arrays, else None"},
    {"decode", py_decode, METH_VARARGS,
     "decode(gaps, fates, position_planes, p, value_planes_or_None, w, itemsize, K, vmax, "
     "out) -> None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_edges_kernel", "Compiled kernel of the medmask.edges codec.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__edges_kernel(void) { return PyModule_Create(&module); }
