/* OpenCV's INTER_LINEAR resize of an 8-bit image, fused with the letterbox's scale to 0..1 and HWC -> CHW.
 *
 * The arithmetic is cv2.resize's, step for step, so the tensor is bit-identical to what ultralytics feeds the
 * model (and to resize.py's numpy port, which the tests hold it to):
 *   horizontal pass  h = (src[x0] * a0 + src[x1] * a1) >> 4      11-bit weights, a0 + a1 = 2048
 *   vertical pass    v = (((b0 * h0) >> 16) + ((b1 * h1) >> 16) + 2) >> 2   (its SIMD path's rounding)
 * and every value is scaled by a float32 division by 255, which gives numpy's floats too.
 * One pass over the source instead of numpy's dozen temporary arrays: 0.48 ms for bus.jpg instead of ~9 with
 * the AVX2 passes (1.1 ms with the SSE2 and scalar ones that CPUs without AVX2 run).
 *
 * Built by inference_service/native.py into _letterbox.so and called through ctypes (which releases
 * the GIL, so other requests' threads run meanwhile). No Python headers, no dependency beyond libc.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
/* The AVX2 passes are compiled on x86-64 with GCC or Clang and used where the CPU has AVX2 (every Cloud Run
 * machine): the library stays portable x86-64. -DLETTERBOX_NO_AVX2 leaves them out (the tests build both). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(LETTERBOX_NO_AVX2)
#define LETTERBOX_AVX2 1
#include <immintrin.h>
#else
#define LETTERBOX_AVX2 0
#endif

/* One pixel of the horizontal pass, its 3 channels into three planes: (l * wl + r * wr) >> 4, as OpenCV. */
static inline void hpixel(const uint8_t *l, const uint8_t *r, int32_t wl, int32_t wr, int16_t *out0,
                          int16_t *out1, int16_t *out2) {
    *out0 = (int16_t)((l[0] * wl + r[0] * wr) >> 4);
    *out1 = (int16_t)((l[1] * wl + r[1] * wr) >> 4);
    *out2 = (int16_t)((l[2] * wl + r[2] * wr) >> 4);
}

/* Whether output pixel x's two source pixels are neighbours and can be read as one 8-byte word inside the row:
 * the pixels the SSE2 and AVX2 passes take (all but the clamped borders). */
static inline int neighbours_in_word(const int32_t *ix0, const int32_t *ix1, int64_t x, int64_t row_len) {
    return ix1[3 * x] == ix0[3 * x] + 3 && ix0[3 * x] + 8 <= row_len;
}

/* Horizontal pass of output pixels x0..x1-1 of one source row (`row_len` bytes) into three planes of `new_w`
 * values each (each fits in 16 bits, as in OpenCV), so that the vertical pass and the scaling run over contiguous
 * values of one channel. The plan's per-value arrays repeat each pixel's offsets and weights for its 3 channels:
 * read every third. Where a pixel's two source pixels are neighbours (all but the clamped borders), SSE2 computes
 * its 3 channels at once from one 8-byte load, 3 multiply-adds of 16-bit pairs. */
static void hpass_pixels(const uint8_t *row, int64_t row_len, const int32_t *ix0, const int32_t *ix1,
                         const int32_t *a0, const int32_t *a1, int64_t new_w, int64_t x0, int64_t x1, int16_t *out) {
    int16_t *out0 = out, *out1 = out + new_w, *out2 = out + 2 * new_w;
#ifdef __SSE2__
    const __m128i zero = _mm_setzero_si128();
#endif
    for (int64_t x = x0; x < x1; x++) {
        int32_t i0 = ix0[3 * x], i1 = ix1[3 * x], wl = a0[3 * x], wr = a1[3 * x];
#ifdef __SSE2__
        if (neighbours_in_word(ix0, ix1, x, row_len)) {
            int64_t bytes;
            memcpy(&bytes, row + i0, 8); /* left pixel, right pixel, 2 bytes more */
            __m128i px = _mm_unpacklo_epi8(_mm_cvtsi64_si128(bytes), zero);         /* l0 l1 l2 r0 r1 r2 . . */
            __m128i pairs = _mm_unpacklo_epi16(px, _mm_srli_si128(px, 6));          /* l0 r0 l1 r1 l2 r2 . . */
            __m128i w = _mm_set1_epi32((int32_t)(((uint32_t)wr << 16) | (uint32_t)wl)); /* wl wr wl wr ...  */
            __m128i sums = _mm_srai_epi32(_mm_madd_epi16(pairs, w), 4);
            out0[x] = (int16_t)_mm_cvtsi128_si32(sums);
            out1[x] = (int16_t)_mm_cvtsi128_si32(_mm_srli_si128(sums, 4));
            out2[x] = (int16_t)_mm_cvtsi128_si32(_mm_srli_si128(sums, 8));
            continue;
        }
#endif
        hpixel(row + i0, row + i1, wl, wr, out0 + x, out1 + x, out2 + x);
    }
}

/* The pixels the AVX2 pass takes, 8 at a time: a run where every pixel's right source pixel is its left one's
 * neighbour and both can be read as one 8-byte word inside the row. Per pixel: its left byte offset (within each
 * block of 8 in gather order, pixels 0 1 4 5 2 3 6 7) and its two weights packed as 16-bit halves (left low),
 * which is how the multiply-add takes them. */
typedef struct {
    int avx2;        /* the CPU has AVX2: the vertical pass runs 8 wide too */
    int64_t x0, x1;  /* x0 + 8k <= x1: the run the AVX2 pass takes */
    int32_t *offset, *weights;
} wide_run;

/* Horizontal pass of pixels run->x0..run->x1-1, 8 per step: two gathers of 4 words of 8 bytes (a pixel's left
 * and right source pixels, 2 bytes more), pixels 0 1 4 5 and 2 3 6 7, so that per channel two in-lane byte
 * shuffles put pixels 0-3 and 4-7 in the two lanes as 16-bit (left, right) pairs; one multiply-add with the
 * packed weights, >> 4 and a pack to 16 bits: OpenCV's integers, as hpass_pixels. */
#if LETTERBOX_AVX2
static const int GATHER_ORDER[8] = {0, 1, 4, 5, 2, 3, 6, 7};

#define Z (-128) /* a shuffle index that writes 0 */
/* Channel c's (left, right) byte pairs of a lane's two pixels as 16-bit values: into its dwords 0-1 (PAIRS) or
 * 2-3 (PAIRS_HIGH); the 8-byte words hold l0 l1 l2 r0 r1 r2 . . */
#define PAIRS(c)                                                                                                 \
    _mm256_broadcastsi128_si256(_mm_setr_epi8((c), Z, (c) + 3, Z, 8 + (c), Z, 11 + (c), Z, Z, Z, Z, Z, Z, Z, Z, Z))
#define PAIRS_HIGH(c)                                                                                            \
    _mm256_broadcastsi128_si256(_mm_setr_epi8(Z, Z, Z, Z, Z, Z, Z, Z, (c), Z, (c) + 3, Z, 8 + (c), Z, 11 + (c), Z))
#define HPASS_CHANNEL(c, plane)                                                                                  \
    do {                                                                                                         \
        __m256i pairs_ = _mm256_or_si256(_mm256_shuffle_epi8(first, PAIRS(c)),                                   \
                                         _mm256_shuffle_epi8(second, PAIRS_HIGH(c)));                            \
        __m256i h_ = _mm256_srai_epi32(_mm256_madd_epi16(pairs_, w), 4);                                         \
        _mm_storeu_si128((__m128i *)((plane) + x),                                                               \
                         _mm_packs_epi32(_mm256_castsi256_si128(h_), _mm256_extracti128_si256(h_, 1)));         \
    } while (0)

__attribute__((target("avx2"))) static void hpass_avx2(const uint8_t *row, const wide_run *run, int64_t new_w,
                                                       int16_t *out) {
    const long long *words = (const long long *)row;
    for (int64_t x = run->x0; x < run->x1; x += 8) {
        __m256i at = _mm256_loadu_si256((const __m256i *)(run->offset + x));
        __m256i first = _mm256_i32gather_epi64(words, _mm256_castsi256_si128(at), 1);       /* pixels 0 1 | 4 5 */
        __m256i second = _mm256_i32gather_epi64(words, _mm256_extracti128_si256(at, 1), 1); /* pixels 2 3 | 6 7 */
        __m256i w = _mm256_loadu_si256((const __m256i *)(run->weights + x));
        HPASS_CHANNEL(0, out);
        HPASS_CHANNEL(1, out + new_w);
        HPASS_CHANNEL(2, out + 2 * new_w);
    }
}
#undef Z
#endif

/* 1 when the AVX2 passes run: compiled in and the CPU has AVX2. For the start-up log and the tests. */
int letterbox_avx2(void) {
#if LETTERBOX_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
#else
    return 0;
#endif
}

/* The wide run of this plan, its arrays in `scratch` (2 * new_w int32); an empty run without AVX2. */
static wide_run plan_wide_run(int64_t row_len, const int32_t *ix0, const int32_t *ix1, const int32_t *a0,
                              const int32_t *a1, int64_t new_w, int32_t *scratch) {
    wide_run run = {letterbox_avx2(), 0, 0, scratch, scratch + new_w};
#if LETTERBOX_AVX2
    if (!run.avx2) return run;
    int64_t x = 0;
    while (x < new_w && !neighbours_in_word(ix0, ix1, x, row_len)) x++;
    run.x0 = run.x1 = x;
    while (run.x1 < new_w && neighbours_in_word(ix0, ix1, run.x1, row_len)) {
        run.weights[run.x1] = (int32_t)(((uint32_t)a1[3 * run.x1] << 16) | (uint32_t)a0[3 * run.x1]);
        run.x1++;
    }
    run.x1 = run.x0 + (run.x1 - run.x0) / 8 * 8;
    for (x = run.x0; x < run.x1; x++) {
        run.offset[x] = ix0[3 * (x - (x - run.x0) % 8 + GATHER_ORDER[(x - run.x0) % 8])];
    }
#else
    (void)row_len, (void)ix0, (void)ix1, (void)a0, (void)a1;
#endif
    return run;
}

/* Horizontal pass of one source row: the wide run with AVX2, the pixels on either side one at a time. */
static void hpass(const uint8_t *row, int64_t row_len, const int32_t *ix0, const int32_t *ix1, const int32_t *a0,
                  const int32_t *a1, int64_t new_w, const wide_run *run, int16_t *out) {
    hpass_pixels(row, row_len, ix0, ix1, a0, a1, new_w, 0, run->x0, out);
#if LETTERBOX_AVX2
    if (run->x1 > run->x0) hpass_avx2(row, run, new_w, out);
#endif
    hpass_pixels(row, row_len, ix0, ix1, a0, a1, new_w, run->x1, new_w, out);
}

/* Vertical pass of one plane's row, scaled to 0..1: contiguous 16-bit high products and a float division,
 * which the compiler vectorises (8 wide in the AVX2 copy). v / 255.0f in float32 is the value numpy's v / 255
 * rounds to, for every v. */
static inline __attribute__((always_inline)) void vpass_values(const int16_t *upper, const int16_t *lower, int16_t w0,
                                                               int16_t w1, int64_t n, float *out) {
    for (int64_t x = 0; x < n; x++) {
        int32_t v = (((w0 * upper[x]) >> 16) + ((w1 * lower[x]) >> 16) + 2) >> 2;
        v = v < 255 ? v : 255;
        out[x] = (float)v / 255.0f;
    }
}

#if LETTERBOX_AVX2
__attribute__((target("avx2"))) static void vpass_avx2(const int16_t *upper, const int16_t *lower, int16_t w0,
                                                       int16_t w1, int64_t n, float *out) {
    vpass_values(upper, lower, w0, w1, n, out);
}
#endif

static void vpass(const int16_t *upper, const int16_t *lower, int16_t w0, int16_t w1, int64_t n, float *out,
                  int wide) {
#if LETTERBOX_AVX2
    if (wide) {
        vpass_avx2(upper, lower, w0, w1, n, out);
        return;
    }
#else
    (void)wide;
#endif
    vpass_values(upper, lower, w0, w1, n, out);
}

/* Output rows y0..y1-1 of the resize of a 3-channel image, written as floats into three planes.
 *
 * src: (h, w * 3) uint8, rows `src_stride` bytes apart, `w * 3` bytes of each read (`row_len`).
 * ys0, ys1, b0, b1: per output row, the two source rows and their weights.
 * ix0, ix1, a0, a1: per output value (x * 3 + channel), the two source bytes and their weights.
 * dst: row y0 of the resized area in plane 0; plane p, row y, column x is
 *      dst[p * plane_stride + (y - y0) * row_stride + x] (strides in floats).
 * Returns 0, or -1 when the row buffers could not be allocated.
 */
int letterbox_rows(const uint8_t *src, int64_t src_stride, int64_t row_len, const int32_t *ys0, const int32_t *ys1,
                   const int32_t *b0, const int32_t *b1, const int32_t *ix0, const int32_t *ix1,
                   const int32_t *a0, const int32_t *a1, int64_t new_w, int64_t y0, int64_t y1,
                   float *dst, int64_t plane_stride, int64_t row_stride) {
    int64_t k = new_w * 3;
    int16_t *buf = malloc(2 * k * sizeof(int16_t) + 2 * new_w * sizeof(int32_t));
    if (!buf) return -1;
    int16_t *upper = buf, *lower = buf + k;
    wide_run run = plan_wide_run(row_len, ix0, ix1, a0, a1, new_w, (int32_t *)(buf + 2 * k));
    int64_t have_upper = -1, have_lower = -1; /* which source rows the buffers hold */
    for (int64_t y = y0; y < y1; y++) {
        int64_t r0 = ys0[y], r1 = ys1[y];
        if (have_upper != r0) {
            if (have_lower == r0) { /* moving down one source row: reuse it */
                int16_t *t = upper; upper = lower; lower = t;
                have_lower = have_upper;
            } else {
                hpass(src + r0 * src_stride, row_len, ix0, ix1, a0, a1, new_w, &run, upper);
            }
            have_upper = r0;
        }
        if (have_lower != r1) {
            if (r1 == r0) {
                memcpy(lower, upper, k * sizeof(int16_t));
            } else {
                hpass(src + r1 * src_stride, row_len, ix0, ix1, a0, a1, new_w, &run, lower);
            }
            have_lower = r1;
        }
        float *out = dst + (y - y0) * row_stride;
        for (int64_t p = 0; p < 3; p++) {
            vpass(upper + p * new_w, lower + p * new_w, (int16_t)b0[y], (int16_t)b1[y], new_w, out + p * plane_stride,
                  run.avx2);
        }
    }
    free(buf);
    return 0;
}
