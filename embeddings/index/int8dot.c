/* The int8 scan's inner loop: one int8 query against every int8 row, at memory speed.
 *
 * dots(codes, query, out) writes out[i] = sum_j codes[i][j] * query[j] as float32, for a
 * C-contiguous int8 matrix `codes` (rows x width), an int8 vector `query` (width) and a float32
 * vector `out` (rows); above(...) keeps only the rows scoring at least a floor. The GIL is
 * released while they run, so threads scan parts in parallel.
 *
 * Why not NumKong's kernel: on AVX2 it widens every byte to 16 bits before multiplying, which
 * makes one core slower than the memory it reads. This one multiplies bytes directly with
 * `vpmaddubsw`, which needs one unsigned operand: a . b == |a| . (b * sign(a)), so the query's
 * magnitudes (unsigned, computed once) meet each row's bytes with the query's signs applied
 * (`vpsignb`). Codes lie in [-127, 127], so each pair of products is at most 2 * 127 * 127,
 * below the 16-bit limit `vpmaddubsw` saturates at: the sums are exact.
 *
 * The AVX2 path is chosen at run time (the module is compiled for any x86-64); other CPUs, and
 * the tail of a width that is not a multiple of 32, use plain C.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_PATH 1
#include <immintrin.h>
#endif

static int32_t dot_scalar(const int8_t *row, const int8_t *query, Py_ssize_t from, Py_ssize_t width)
{
    int32_t sum = 0;
    for (Py_ssize_t j = from; j < width; j++)
        sum += (int32_t)row[j] * (int32_t)query[j];
    return sum;
}

static void dots_scalar(const int8_t *codes, Py_ssize_t rows, Py_ssize_t width,
                        const int8_t *query, float *out)
{
    for (Py_ssize_t i = 0; i < rows; i++)
        out[i] = (float)dot_scalar(codes + i * width, query, 0, width);
}

#ifdef HAVE_AVX2_PATH
/* Rows ahead to prefetch: the next group of four. Without prefetching the loop stalls on memory
 * at half the read bandwidth; from 8 rows ahead on it is slower again (measured on 1M rows). */
#define PREFETCH_ROWS 4
/* One prefetch per cache line of the rows ahead. */
#define CACHE_LINE 64
/* The query is held in registers' worth of 32 bytes, at most this many: widths up to 2,079 bytes
 * take the AVX2 path (the 384-dimension model needs 12); wider rows take the scalar one. */
#define MAX_CHUNKS 64

/* The eight 32-bit lanes of each of four vectors summed: one int32 per vector. */
__attribute__((target("avx2"))) static inline __m128i
four_totals(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i ab = _mm256_hadd_epi32(a, b), cd = _mm256_hadd_epi32(c, d);
    __m256i abcd = _mm256_hadd_epi32(ab, cd);
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* 32 bytes of a row times the query's 32 bytes, as eight partial int32 sums added to `sum`. */
__attribute__((target("avx2"))) static inline __m256i
add_products(__m256i sum, const int8_t *bytes, __m256i magnitude, __m256i sign)
{
    __m256i row = _mm256_loadu_si256((const __m256i *)bytes);
    __m256i pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(row, sign));
    return _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

__attribute__((target("avx2"))) static void
dots_avx2(const int8_t *codes, Py_ssize_t rows, Py_ssize_t width, const int8_t *query, float *out)
{
    Py_ssize_t chunks = width / 32, tail = chunks * 32;
    __m256i magnitude[MAX_CHUNKS], sign[MAX_CHUNKS];
    for (Py_ssize_t c = 0; c < chunks; c++) {
        sign[c] = _mm256_loadu_si256((const __m256i *)(query + 32 * c));
        magnitude[c] = _mm256_abs_epi8(sign[c]);
    }
    Py_ssize_t i = 0;
    for (; i + 4 <= rows; i += 4) { /* four rows at once: four independent sums, one reduction */
        const int8_t *row = codes + i * width;
        for (Py_ssize_t byte = 0; byte < 4 * width; byte += CACHE_LINE)
            _mm_prefetch((const char *)(row + PREFETCH_ROWS * width + byte), _MM_HINT_T0);
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        for (Py_ssize_t c = 0; c < chunks; c++) {
            const int8_t *at = row + 32 * c;
            s0 = add_products(s0, at, magnitude[c], sign[c]);
            s1 = add_products(s1, at + width, magnitude[c], sign[c]);
            s2 = add_products(s2, at + 2 * width, magnitude[c], sign[c]);
            s3 = add_products(s3, at + 3 * width, magnitude[c], sign[c]);
        }
        __m128i totals = four_totals(s0, s1, s2, s3);
        if (tail < width) {
            __m128i rest = _mm_setr_epi32(dot_scalar(row, query, tail, width),
                                          dot_scalar(row + width, query, tail, width),
                                          dot_scalar(row + 2 * width, query, tail, width),
                                          dot_scalar(row + 3 * width, query, tail, width));
            totals = _mm_add_epi32(totals, rest);
        }
        _mm_storeu_ps(out + i, _mm_cvtepi32_ps(totals));
    }
    dots_scalar(codes + i * width, rows - i, width, query, out + i); /* the last 0-3 rows */
}
#endif

static int has_avx2(void)
{
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

static int avx2 = 0;

/* out[i] = codes[i] . query for `rows` rows, by the fastest path this CPU has. */
static void dots_any(const int8_t *codes, Py_ssize_t rows, Py_ssize_t width, const int8_t *query,
                     float *out)
{
#ifdef HAVE_AVX2_PATH
    if (avx2 && width >= 32 && width / 32 <= MAX_CHUNKS) {
        dots_avx2(codes, rows, width, query, out);
        return;
    }
#endif
    dots_scalar(codes, rows, width, query, out);
}

/* Rows per step of `above`: their scores stay in the core's L1 cache until filtered. */
#define STEP 256

/* The rows scoring at least `floor`, with their scores, into rows_out / scores_out; returns
 * how many. A scan keeps its best rows as it goes, and most rows fall below the running floor:
 * filtering them here spares writing and re-reading every score. */
static Py_ssize_t above_any(const int8_t *codes, Py_ssize_t rows, Py_ssize_t width,
                            const int8_t *query, float floor, int64_t *rows_out, float *scores_out)
{
    float scores[STEP];
    Py_ssize_t kept = 0;
    for (Py_ssize_t first = 0; first < rows; first += STEP) {
        Py_ssize_t count = rows - first < STEP ? rows - first : STEP;
        dots_any(codes + first * width, count, width, query, scores);
        for (Py_ssize_t i = 0; i < count; i++) {
            if (scores[i] >= floor) {
                rows_out[kept] = first + i;
                scores_out[kept++] = scores[i];
            }
        }
    }
    return kept;
}

/* Checks that `codes` holds whole rows of the query's width; sets *rows. */
static int fit(const Py_buffer *codes, const Py_buffer *query, Py_ssize_t *rows)
{
    Py_ssize_t width = query->len;
    *rows = width > 0 ? codes->len / width : 0;
    if (width > 0 && codes->len == *rows * width)
        return 1;
    PyErr_Format(PyExc_ValueError, "codes (%zd bytes) are not rows of the query's %zd bytes",
                 codes->len, query->len);
    return 0;
}

static PyObject *dots(PyObject *self, PyObject *args)
{
    Py_buffer codes, query, out;
    if (!PyArg_ParseTuple(args, "y*y*w*", &codes, &query, &out))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t rows;
    if (!fit(&codes, &query, &rows))
        goto done;
    if (out.len != rows * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "out holds %zd bytes, not %zd float32", out.len, rows);
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    dots_any(codes.buf, rows, query.len, query.buf, out.buf);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&codes);
    PyBuffer_Release(&query);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *above(PyObject *self, PyObject *args)
{
    Py_buffer codes, query, rows_out, scores_out;
    float floor;
    if (!PyArg_ParseTuple(args, "y*y*fw*w*", &codes, &query, &floor, &rows_out, &scores_out))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t rows, kept;
    if (!fit(&codes, &query, &rows))
        goto done;
    if (rows_out.len < rows * (Py_ssize_t)sizeof(int64_t) ||
        scores_out.len < rows * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "rows_out and scores_out must hold %zd int64 / float32",
                     rows);
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    kept = above_any(codes.buf, rows, query.len, query.buf, floor, rows_out.buf, scores_out.buf);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(kept);
done:
    PyBuffer_Release(&codes);
    PyBuffer_Release(&query);
    PyBuffer_Release(&rows_out);
    PyBuffer_Release(&scores_out);
    return result;
}

static PyObject *simd(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(avx2);
}

static PyMethodDef methods[] = {
    {"dots", dots, METH_VARARGS,
     "dots(codes, query, out): out[i] = codes[i] . query for C-contiguous int8 rows, float32 out."},
    {"above", above, METH_VARARGS,
     "above(codes, query, floor, rows_out, scores_out) -> n: the rows whose dot product with\n"
     "query is at least floor, and those products, into the first n places of the outputs."},
    {"simd", simd, METH_NOARGS, "simd() -> bool: whether the AVX2 path runs on this CPU."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "int8dot", NULL, -1, methods};

PyMODINIT_FUNC PyInit_int8dot(void)
{
    avx2 = has_avx2();
    return PyModule_Create(&module);
}
