/* Convolutions in float32 computed directly: no unfolded input and no packing, the
 * kernels read the (zero-padded) images where they lie. Row mode (3x3, stride 1; the
 * comments below) tiles pixels of a row; lane mode (any kernel, stride 1; at its macros)
 * tiles one pixel of a block of images.
 *
 *   out[f, i, j] = sum over c, u, v (in that order) of x[c, i + u, j + v] * w[c, u, v, f]
 *
 * x: one padded image (C, HP, WP), rows WP apart, channels HP WP apart, with at least
 * FASTNN_C3_SLACK readable floats after it; w: the weights packed as [(c 9 + 3 u + v) F
 * + f]; out: (F, OH, OW) with OH = HP - 2 and OW <= WP - 2. A tile is FT filters by two
 * vectors of pixels of one output row, held in registers through the whole sum
 * (2 FT accumulators, fused multiply-adds with the weight broadcast): the products run
 * at the machine's multiply-add peak, as a BLAS micro-kernel. Lanes past the row's end
 * compute garbage from the next row and are never stored.
 *
 * Every output is one chain of multiply-adds in the order above whatever the tile, the
 * thread or the instruction set (AVX-512 and AVX2 builds both fuse), so results are
 * bit-identical across thread counts and between the two (dw, below, only across thread
 * counts: it adds its vector lanes at the end).
 *
 * The weight gradient, dw[f, c, u, v] += sum over i, j of d[f, i, j] x[c, i + u, j + v],
 * runs per (tile of filters, channel) over whole images: 27 accumulators (3 filters x 9
 * offsets; AVX2's 16 registers take 1 x 9) of pixel vectors, each loaded d shared by 9
 * of them and each loaded x by the tile's filters. Its operands are
 * laid out for aligned loads first: dz in rows of R floats (a multiple of the vector
 * width, zeros past the row's end) and the channel's x as three copies shifted by 0, 1
 * and 2 columns (zeros past the padded row). Each accumulator's lanes are added at the end
 * in a fixed tree (`fastnn_hsum_*`). Each sum has a fixed order for a given vector width.
 *
 * fastnn_c3_level(): 2 with AVX-512F and FMA, 1 with AVX2 and FMA, 0 otherwise (or on a
 * compiler or platform without GCC's target attributes: then the caller unfolds). */
#ifndef FASTNN_CONV_DIRECT_H
#define FASTNN_CONV_DIRECT_H

#include <stddef.h>

#define FASTNN_C3_SLACK 66

#if defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER) \
    && defined(__x86_64__) && __GNUC__ >= 8

typedef float fastnn_v16 __attribute__((vector_size(64)));
typedef float fastnn_v16u __attribute__((vector_size(64), aligned(4)));
typedef float fastnn_v8 __attribute__((vector_size(32)));
typedef float fastnn_v8u __attribute__((vector_size(32), aligned(4)));

#define FASTNN_C3_AVX512 __attribute__((target("avx512f,fma"), optimize("fp-contract=fast")))
#define FASTNN_C3_AVX2 __attribute__((target("avx2,fma"), optimize("fp-contract=fast")))

typedef int fastnn_i16 __attribute__((vector_size(64)));
typedef int fastnn_i8 __attribute__((vector_size(32)));

/* the sum of a vector's lanes, in a fixed tree: halves, then quarters, ... (a dw adds
   27 accumulators per image and channel: lane by lane it cost a third of the products) */
FASTNN_C3_AVX512 static inline float fastnn_hsum_512(fastnn_v16 v)
{
    v += __builtin_shuffle(v, (fastnn_i16){8, 9, 10, 11, 12, 13, 14, 15,
                                           0, 1, 2, 3, 4, 5, 6, 7});
    v += __builtin_shuffle(v, (fastnn_i16){4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3});
    v += __builtin_shuffle(v, (fastnn_i16){2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1});
    return v[0] + v[1];
}

FASTNN_C3_AVX2 static inline float fastnn_hsum_256(fastnn_v8 v)
{
    v += __builtin_shuffle(v, (fastnn_i8){4, 5, 6, 7, 0, 1, 2, 3});
    v += __builtin_shuffle(v, (fastnn_i8){2, 3, 0, 1, 2, 3, 0, 1});
    return v[0] + v[1];
}

/* where a tile reads and writes: input channel stride, input steps of one kernel row and
   one kernel column, kernel size, input channels, filters (the packed weights' row
   length), output plane stride */
typedef struct {
    ptrdiff_t cs, us, vs, kh, kw, nc, nf, fs;
} fastnn_ck_geom;

/* one tile: FT filters by two vectors of outputs, the second L floats after the first
   (row mode: the next L pixels of the row; lane mode: the next pixel's L images); x at
   the tile's first window, w at filter f0, out at (f0, first output); nvalid: the
   tile's outputs to store (2 L, or fewer at a row's end) */
#define FASTNN_C3_TILE(NAME, TARGET, V, VU, L, FT)                                      \
TARGET static void NAME(const float *x, const float *w, float *out,                    \
                        const fastnn_ck_geom *g, ptrdiff_t nvalid)                      \
{                                                                                       \
    V acc0[FT], acc1[FT];                                                               \
    float buf[2 * L];                                                                   \
    ptrdiff_t c, f, u, v, j;                                                            \
    for (f = 0; f < FT; f++) {                                                          \
        acc0[f] = (V){0};                                                               \
        acc1[f] = (V){0};                                                               \
    }                                                                                   \
    for (c = 0; c < g->nc; c++) {                                                       \
        for (u = 0; u < g->kh; u++) {                                                   \
            for (v = 0; v < g->kw; v++) {                                               \
                const float *xr = x + c * g->cs + u * g->us + v * g->vs;                \
                const float *wk = w + ((c * g->kh + u) * g->kw + v) * g->nf;            \
                V a0 = *(const VU *)xr;                                                 \
                V a1 = *(const VU *)(xr + L);                                           \
                for (f = 0; f < FT; f++) {                                              \
                    acc0[f] += a0 * wk[f];                                              \
                    acc1[f] += a1 * wk[f];                                              \
                }                                                                       \
            }                                                                           \
        }                                                                               \
    }                                                                                   \
    for (f = 0; f < FT; f++) {                                                          \
        if (nvalid == 2 * L) {                                                          \
            *(VU *)(out + f * g->fs) = acc0[f];                                         \
            *(VU *)(out + f * g->fs + L) = acc1[f];                                     \
        } else {                                                                        \
            *(VU *)buf = acc0[f];                                                       \
            *(VU *)(buf + L) = acc1[f];                                                 \
            for (j = 0; j < nvalid; j++)                                                \
                out[f * g->fs + j] = buf[j];                                            \
        }                                                                               \
    }                                                                                   \
}

/* the tiles of one output position, the filters in tiles of BIG, then MID, 4, 2 and 1 */
#define FASTNN_CK_FILTERS(BIG, TB, MID, TM, T4, T2, T1, xt, w, ot, g, n)                \
    for (f0 = 0; f0 + BIG <= (g)->nf; f0 += BIG)                                        \
        TB(xt, w + f0, ot + f0 * (g)->fs, g, n);                                        \
    for (; f0 + MID <= (g)->nf; f0 += MID)                                              \
        TM(xt, w + f0, ot + f0 * (g)->fs, g, n);                                        \
    for (; f0 + 4 <= (g)->nf; f0 += 4)                                                  \
        T4(xt, w + f0, ot + f0 * (g)->fs, g, n);                                        \
    for (; f0 + 2 <= (g)->nf; f0 += 2)                                                  \
        T2(xt, w + f0, ot + f0 * (g)->fs, g, n);                                        \
    for (; f0 < (g)->nf; f0++)                                                          \
        T1(xt, w + f0, ot + f0 * (g)->fs, g, n);

/* a whole image, row mode (3x3): per output row and tile of 2 L pixels, every filter */
#define FASTNN_C3_IMAGE(NAME, TARGET, L, BIG, TB, MID, TM, T4, T2, T1)                  \
TARGET static void NAME(const float *x, ptrdiff_t nc, ptrdiff_t hp, ptrdiff_t wp,       \
                        const float *w, ptrdiff_t nf, float *out, ptrdiff_t oh,         \
                        ptrdiff_t ow)                                                   \
{                                                                                       \
    fastnn_ck_geom g = {hp * wp, wp, 1, 3, 3, nc, nf, oh * ow};                         \
    ptrdiff_t i, j0, f0, n;                                                             \
    for (i = 0; i < oh; i++)                                                            \
        for (j0 = 0; j0 < ow; j0 += 2 * L) {                                            \
            n = ow - j0 < 2 * L ? ow - j0 : 2 * L;                                      \
            FASTNN_CK_FILTERS(BIG, TB, MID, TM, T4, T2, T1, x + i * wp + j0, w,         \
                              out + i * ow + j0, &g, n)                                 \
        }                                                                               \
}

/* L images at once, lane mode (any kernel size): x (C, HP, WP, L) and out (F, OH, OW, L)
   hold image b of the block in lane b; per output row and pair of pixels, every
   filter */
#define FASTNN_CK_LANES(NAME, TARGET, L, BIG, TB, MID, TM, T4, T2, T1)                  \
TARGET static void NAME(const float *x, ptrdiff_t nc, ptrdiff_t hp, ptrdiff_t wp,       \
                        ptrdiff_t kh, ptrdiff_t kw, const float *w, ptrdiff_t nf,       \
                        float *out, ptrdiff_t oh, ptrdiff_t ow)                         \
{                                                                                       \
    fastnn_ck_geom g = {hp * wp * L, wp * L, L, kh, kw, nc, nf, oh * ow * L};           \
    ptrdiff_t i, j0, f0, n;                                                             \
    for (i = 0; i < oh; i++)                                                            \
        for (j0 = 0; j0 < ow; j0 += 2) {                                                \
            n = j0 + 1 < ow ? 2 * L : L;                                                \
            FASTNN_CK_FILTERS(BIG, TB, MID, TM, T4, T2, T1, x + (i * wp + j0) * L, w,   \
                              out + (i * ow + j0) * L, &g, n)                           \
        }                                                                               \
}

/* lane mode dw of FT filters, one channel, one kernel row u (KW columns): x at (c, u, 0)
   of the block's padded input (rows xr apart), d at (f0, 0, 0) of dz, its filters fs
   and its rows dr apart; dw at (f0, c, u, 0), filters dws apart */
#define FASTNN_CK_DW_LANES(NAME, TARGET, V, VU, L, HSUM, FT, KW)                        \
TARGET static void NAME(const float *x, ptrdiff_t xr, const float *d, ptrdiff_t fs,     \
                        ptrdiff_t dr, ptrdiff_t oh, ptrdiff_t ow, float *dw,           \
                        ptrdiff_t dws)                                                  \
{                                                                                       \
    V acc[FT][KW], dv[FT], xv;                                                          \
    ptrdiff_t i, j, f, v;                                                               \
    for (f = 0; f < FT; f++)                                                            \
        for (v = 0; v < KW; v++)                                                        \
            acc[f][v] = (V){0};                                                         \
    for (i = 0; i < oh; i++)                                                            \
        for (j = 0; j < ow; j++) {                                                      \
            for (f = 0; f < FT; f++)                                                    \
                dv[f] = *(const VU *)(d + f * fs + i * dr + j * L);                     \
            for (v = 0; v < KW; v++) {                                                  \
                xv = *(const VU *)(x + i * xr + (j + v) * L);                           \
                __asm__("" : "+v"(xv));                                                 \
                for (f = 0; f < FT; f++)                                                \
                    acc[f][v] += dv[f] * xv;                                            \
            }                                                                           \
        }                                                                               \
    for (f = 0; f < FT; f++)                                                            \
        for (v = 0; v < KW; v++) {                                                      \
            dw[f * dws + v] += HSUM(acc[f][v]);                                         \
        }                                                                               \
}

/* lane mode dx of FT channels, scattered: dx[c, i + u, j + v] += sum over f of
   d[f, i, j] w[f, c, u, v], over i, pairs of j, u, v in that order (a pair's two
   outputs are two rows of accumulators: 2 FT independent sums); d at (0, 0, 0) of dz,
   its filters fs and rows dr apart; w packed as [((u KW + v) F + f) C + c] at channel
   c0; dx at channel c0 of the block's padded dx (channels cs, rows dxr apart) */
#define FASTNN_CK_DX_LANES(NAME, TARGET, V, VU, L, FT)                                  \
TARGET static void NAME(const float *d, ptrdiff_t fs, ptrdiff_t dr, ptrdiff_t nf,       \
                        ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh, ptrdiff_t kw,         \
                        const float *w, ptrdiff_t nc, float *dx, ptrdiff_t cs,          \
                        ptrdiff_t dxr)                                                  \
{                                                                                       \
    V acc0[FT], acc1[FT], d0, d1;                                                       \
    ptrdiff_t i, j, u, v, f, c, two;                                                    \
    for (i = 0; i < oh; i++)                                                            \
        for (j = 0; j < ow; j += 2) {                                                   \
            two = j + 1 < ow;                                                           \
            for (u = 0; u < kh; u++)                                                    \
                for (v = 0; v < kw; v++) {                                              \
                    float *o = dx + (i + u) * dxr + (j + v) * L;                        \
                    const float *wk = w + (u * kw + v) * nf * nc;                       \
                    const float *dp = d + i * dr + j * L;                               \
                    for (c = 0; c < FT; c++) {                                          \
                        acc0[c] = *(VU *)(o + c * cs);                                  \
                        acc1[c] = two ? *(VU *)(o + c * cs + L) : (V){0};               \
                    }                                                                   \
                    for (f = 0; f < nf; f++) {                                          \
                        d0 = *(const VU *)(dp + f * fs);                                \
                        d1 = two ? *(const VU *)(dp + f * fs + L) : (V){0};             \
                        for (c = 0; c < FT; c++) {                                      \
                            acc0[c] += d0 * wk[f * nc + c];                             \
                            acc1[c] += d1 * wk[f * nc + c];                             \
                        }                                                               \
                    }                                                                   \
                    for (c = 0; c < FT; c++) {                                          \
                        *(VU *)(o + c * cs) = acc0[c];                                  \
                        if (two)                                                        \
                            *(VU *)(o + c * cs + L) = acc1[c];                          \
                    }                                                                   \
                }                                                                       \
        }                                                                               \
}

/* lane mode dx of a block: the channels in tiles of 8, 6, 4, 2 and 1 */
#define FASTNN_CK_DX_BLOCK(NAME, TARGET, X8, X6, X4, X2, X1)                            \
TARGET static void NAME(const float *d, ptrdiff_t fs, ptrdiff_t dr, ptrdiff_t nf,       \
                        ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh, ptrdiff_t kw,         \
                        const float *w, ptrdiff_t nc, float *dx, ptrdiff_t cs,          \
                        ptrdiff_t dxr)                                                  \
{                                                                                       \
    ptrdiff_t c0 = 0;                                                                   \
    for (; c0 + 8 <= nc; c0 += 8)                                                       \
        X8(d, fs, dr, nf, oh, ow, kh, kw, w + c0, nc, dx + c0 * cs, cs, dxr);           \
    for (; c0 + 6 <= nc; c0 += 6)                                                       \
        X6(d, fs, dr, nf, oh, ow, kh, kw, w + c0, nc, dx + c0 * cs, cs, dxr);           \
    for (; c0 + 4 <= nc; c0 += 4)                                                       \
        X4(d, fs, dr, nf, oh, ow, kh, kw, w + c0, nc, dx + c0 * cs, cs, dxr);           \
    for (; c0 + 2 <= nc; c0 += 2)                                                       \
        X2(d, fs, dr, nf, oh, ow, kh, kw, w + c0, nc, dx + c0 * cs, cs, dxr);           \
    for (; c0 < nc; c0++)                                                               \
        X1(d, fs, dr, nf, oh, ow, kh, kw, w + c0, nc, dx + c0 * cs, cs, dxr);           \
}

/* lane mode dw of a block: per channel and kernel row, the filters in tiles of FT (then
   one); x (C, HP, WP, L) padded, d (F, OH, OW, L) at its first real cell with rows dr
   apart and filters fs apart */
#define FASTNN_CK_DW_BLOCK(NAME, TARGET, L, FT, KW, DT, D1)                             \
TARGET static void NAME(const float *x, ptrdiff_t nc, ptrdiff_t hp, ptrdiff_t wp,       \
                        ptrdiff_t kh, const float *d, ptrdiff_t nf, ptrdiff_t fs,       \
                        ptrdiff_t dr, ptrdiff_t oh, ptrdiff_t ow, float *dw)            \
{                                                                                       \
    ptrdiff_t c, u, f0, dws = nc * kh * KW;                                             \
    for (c = 0; c < nc; c++)                                                            \
        for (u = 0; u < kh; u++) {                                                      \
            const float *xc = x + ((c * hp + u) * wp) * L;                              \
            float *dwc = dw + (c * kh + u) * KW;                                        \
            for (f0 = 0; f0 + FT <= nf; f0 += FT)                                       \
                DT(xc, wp * L, d + f0 * fs, fs, dr, oh, ow, dwc + f0 * dws, dws);       \
            for (; f0 < nf; f0++)                                                       \
                D1(xc, wp * L, d + f0 * fs, fs, dr, oh, ow, dwc + f0 * dws, dws);       \
        }                                                                               \
}

/* dw of FT filters and one channel over aligned rows of R floats (R a multiple of L):
   xs: the channel's three column-shifted copies (3, OH + 2, R), d: dz (F, OH, R) at
   filter f0, both zero past each row's end; dw at (f0, c, 0), filters dws apart */
#define FASTNN_C3_DW(NAME, TARGET, V, VU, L, HSUM, FT)                                  \
TARGET static void NAME(const float *xs, const float *d, ptrdiff_t oh, ptrdiff_t r,     \
                        float *dw, ptrdiff_t dws)                                       \
{                                                                                       \
    V acc[FT][9], dv[FT], xv;                                                           \
    ptrdiff_t t, f, k, plane = (oh + 2) * r;                                            \
    for (f = 0; f < FT; f++)                                                            \
        for (k = 0; k < 9; k++)                                                         \
            acc[f][k] = (V){0};                                                         \
    for (t = 0; t < oh * r; t += L) {     /* rows of r both: one flat loop */          \
        for (f = 0; f < FT; f++)                                                        \
            dv[f] = *(const VU *)(d + f * oh * r + t);                                  \
        for (k = 0; k < 9; k++) {                                                       \
            xv = *(const VU *)(xs + (k % 3) * plane + (k / 3) * r + t);                 \
            __asm__("" : "+v"(xv));           /* one load, not one per filter */        \
            for (f = 0; f < FT; f++)                                                    \
                acc[f][k] += dv[f] * xv;                                                \
        }                                                                               \
    }                                                                                   \
    for (f = 0; f < FT; f++)                                                            \
        for (k = 0; k < 9; k++) {                                                       \
            dw[f * dws + k] += HSUM(acc[f][k]);                                         \
        }                                                                               \
}

/* dw of a whole image: per channel, its shifted copies, then the filters in pairs (then
   one); d as FASTNN_C3_DW's, xs room for (3, OH + 2, R) */
#define FASTNN_C3_DW_IMAGE(NAME, TARGET, V, VU, L, FT, DT, D2, D1)                      \
TARGET static void NAME(const float *x, ptrdiff_t nc, ptrdiff_t hp, ptrdiff_t wp,       \
                        const float *d, ptrdiff_t nf, ptrdiff_t oh, ptrdiff_t r,        \
                        float *xs, float *dw)                                           \
{                                                                                       \
    ptrdiff_t c, f0, v, i, j;                                                           \
    float *row;                                                                         \
    const float *src;                                                                   \
    for (c = 0; c < nc; c++) {                                                          \
        for (v = 0; v < 3; v++)                                                         \
            for (i = 0; i < oh + 2; i++) {                                              \
                row = xs + (v * (oh + 2) + i) * r;                                      \
                src = x + (c * hp + i) * wp + v;                                        \
                for (j = 0; j < r; j += L)    /* past wp - v: overwritten below */      \
                    *(V *)(row + j) = *(const VU *)(src + j);                           \
                for (j = wp - v; j < r; j++)                                            \
                    row[j] = 0.0f;                                                      \
            }                                                                           \
        for (f0 = 0; f0 + FT <= nf; f0 += FT)                                           \
            DT(xs, d + f0 * oh * r, oh, r, dw + (f0 * nc + c) * 9, nc * 9);             \
        for (; f0 + 2 <= nf && FT > 2; f0 += 2)                                         \
            D2(xs, d + f0 * oh * r, oh, r, dw + (f0 * nc + c) * 9, nc * 9);             \
        for (; f0 < nf; f0++)                                                           \
            D1(xs, d + f0 * oh * r, oh, r, dw + (f0 * nc + c) * 9, nc * 9);             \
    }                                                                                   \
}

/* every kernel of one instruction set, named fastnn_<kind>_<P>_...: vectors of L floats;
   direct tiles of BIG, then MID, 4, 2, 1 filters; direct dw tiles of DW filters; lane
   dw tiles of DW3 (3 columns) and DW5 (5 columns) filters */
#define FASTNN_CK_ISA(P, TARGET, V, VU, L, BIG, MID, DW, DW3, DW5)                       \
FASTNN_C3_TILE(fastnn_c3_##P##_big, TARGET, V, VU, L, BIG)                              \
FASTNN_C3_TILE(fastnn_c3_##P##_mid, TARGET, V, VU, L, MID)                              \
FASTNN_C3_TILE(fastnn_c3_##P##_4, TARGET, V, VU, L, 4)                                  \
FASTNN_C3_TILE(fastnn_c3_##P##_2, TARGET, V, VU, L, 2)                                  \
FASTNN_C3_TILE(fastnn_c3_##P##_1, TARGET, V, VU, L, 1)                                  \
FASTNN_C3_IMAGE(fastnn_c3_##P, TARGET, L, BIG, fastnn_c3_##P##_big, MID,                \
                fastnn_c3_##P##_mid, fastnn_c3_##P##_4, fastnn_c3_##P##_2,              \
                fastnn_c3_##P##_1)                                                      \
FASTNN_C3_DW(fastnn_c3_dw_##P##_t, TARGET, V, VU, L, fastnn_hsum_##P, DW)               \
FASTNN_C3_DW(fastnn_c3_dw_##P##_2, TARGET, V, VU, L, fastnn_hsum_##P, 2)                \
FASTNN_C3_DW(fastnn_c3_dw_##P##_1, TARGET, V, VU, L, fastnn_hsum_##P, 1)                \
FASTNN_C3_DW_IMAGE(fastnn_c3_dw_##P, TARGET, V, VU, L, DW, fastnn_c3_dw_##P##_t,        \
                   fastnn_c3_dw_##P##_2, fastnn_c3_dw_##P##_1)                          \
FASTNN_CK_LANES(fastnn_ck_##P, TARGET, L, BIG, fastnn_c3_##P##_big, MID,                \
                fastnn_c3_##P##_mid, fastnn_c3_##P##_4, fastnn_c3_##P##_2,              \
                fastnn_c3_##P##_1)                                                      \
FASTNN_CK_DW_LANES(fastnn_ck_dw_##P##_t3, TARGET, V, VU, L, fastnn_hsum_##P, DW3, 3)    \
FASTNN_CK_DW_LANES(fastnn_ck_dw_##P##_13, TARGET, V, VU, L, fastnn_hsum_##P, 1, 3)      \
FASTNN_CK_DW_LANES(fastnn_ck_dw_##P##_t5, TARGET, V, VU, L, fastnn_hsum_##P, DW5, 5)    \
FASTNN_CK_DW_LANES(fastnn_ck_dw_##P##_15, TARGET, V, VU, L, fastnn_hsum_##P, 1, 5)      \
FASTNN_CK_DW_BLOCK(fastnn_ck_dwb_##P##_3, TARGET, L, DW3, 3, fastnn_ck_dw_##P##_t3,     \
                   fastnn_ck_dw_##P##_13)                                               \
FASTNN_CK_DW_BLOCK(fastnn_ck_dwb_##P##_5, TARGET, L, DW5, 5, fastnn_ck_dw_##P##_t5,     \
                   fastnn_ck_dw_##P##_15)                                               \
FASTNN_CK_DX_LANES(fastnn_ck_dx_##P##_8, TARGET, V, VU, L, 8)                           \
FASTNN_CK_DX_LANES(fastnn_ck_dx_##P##_6, TARGET, V, VU, L, 6)                           \
FASTNN_CK_DX_LANES(fastnn_ck_dx_##P##_4, TARGET, V, VU, L, 4)                           \
FASTNN_CK_DX_LANES(fastnn_ck_dx_##P##_2, TARGET, V, VU, L, 2)                           \
FASTNN_CK_DX_LANES(fastnn_ck_dx_##P##_1, TARGET, V, VU, L, 1)                           \
FASTNN_CK_DX_BLOCK(fastnn_ck_dxb_##P, TARGET, fastnn_ck_dx_##P##_8, fastnn_ck_dx_##P##_6, \
                   fastnn_ck_dx_##P##_4, fastnn_ck_dx_##P##_2, fastnn_ck_dx_##P##_1)

/* AVX-512: 32 registers; AVX2: 16 */
FASTNN_CK_ISA(512, FASTNN_C3_AVX512, fastnn_v16, fastnn_v16u, 16, 12, 8, 3, 6, 3)
FASTNN_CK_ISA(256, FASTNN_C3_AVX2, fastnn_v8, fastnn_v8u, 8, 6, 4, 1, 3, 2)

static int fastnn_c3_level(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma"))
        return 0;
    if (__builtin_cpu_supports("avx512f"))
        return 2;
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}

static void fastnn_c3_image(int level, const float *x, ptrdiff_t nc, ptrdiff_t hp,
                            ptrdiff_t wp, const float *w, ptrdiff_t nf, float *out,
                            ptrdiff_t oh, ptrdiff_t ow)
{
    if (level == 2)
        fastnn_c3_512(x, nc, hp, wp, w, nf, out, oh, ow);
    else
        fastnn_c3_256(x, nc, hp, wp, w, nf, out, oh, ow);
}

static void fastnn_c3_dw_image(int level, const float *x, ptrdiff_t nc, ptrdiff_t hp,
                               ptrdiff_t wp, const float *d, ptrdiff_t nf, ptrdiff_t oh,
                               ptrdiff_t r, float *xs, float *dw)
{
    if (level == 2)
        fastnn_c3_dw_512(x, nc, hp, wp, d, nf, oh, r, xs, dw);
    else
        fastnn_c3_dw_256(x, nc, hp, wp, d, nf, oh, r, xs, dw);
}

/* lane mode: L = fastnn_ck_lanes(level) images per block */
static ptrdiff_t fastnn_ck_lanes(int level) { return level == 2 ? 16 : 8; }

static void fastnn_ck_block(int level, const float *x, ptrdiff_t nc, ptrdiff_t hp,
                            ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw, const float *w,
                            ptrdiff_t nf, float *out, ptrdiff_t oh, ptrdiff_t ow)
{
    if (level == 2)
        fastnn_ck_512(x, nc, hp, wp, kh, kw, w, nf, out, oh, ow);
    else
        fastnn_ck_256(x, nc, hp, wp, kh, kw, w, nf, out, oh, ow);
}

/* kw must be 3 or 5 */
static void fastnn_ck_dw_block(int level, const float *x, ptrdiff_t nc, ptrdiff_t hp,
                               ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw, const float *d,
                               ptrdiff_t nf, ptrdiff_t fs, ptrdiff_t dr, ptrdiff_t oh,
                               ptrdiff_t ow, float *dw)
{
    if (level == 2 && kw == 3)
        fastnn_ck_dwb_512_3(x, nc, hp, wp, kh, d, nf, fs, dr, oh, ow, dw);
    else if (level == 2)
        fastnn_ck_dwb_512_5(x, nc, hp, wp, kh, d, nf, fs, dr, oh, ow, dw);
    else if (kw == 3)
        fastnn_ck_dwb_256_3(x, nc, hp, wp, kh, d, nf, fs, dr, oh, ow, dw);
    else
        fastnn_ck_dwb_256_5(x, nc, hp, wp, kh, d, nf, fs, dr, oh, ow, dw);
}

static void fastnn_ck_dx_block(int level, const float *d, ptrdiff_t fs, ptrdiff_t dr,
                               ptrdiff_t nf, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh,
                               ptrdiff_t kw, const float *w, ptrdiff_t nc, float *dx,
                               ptrdiff_t cs, ptrdiff_t dxr)
{
    if (level == 2)
        fastnn_ck_dxb_512(d, fs, dr, nf, oh, ow, kh, kw, w, nc, dx, cs, dxr);
    else
        fastnn_ck_dxb_256(d, fs, dr, nf, oh, ow, kh, kw, w, nc, dx, cs, dxr);
}

#else

static int fastnn_c3_level(void) { return 0; }

static void fastnn_ck_dx_block(int level, const float *d, ptrdiff_t fs, ptrdiff_t dr,
                               ptrdiff_t nf, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh,
                               ptrdiff_t kw, const float *w, ptrdiff_t nc, float *dx,
                               ptrdiff_t cs, ptrdiff_t dxr)
{
    (void)level; (void)d; (void)fs; (void)dr; (void)nf; (void)oh; (void)ow; (void)kh;
    (void)kw; (void)w; (void)nc; (void)dx; (void)cs; (void)dxr;
}

static ptrdiff_t fastnn_ck_lanes(int level) { (void)level; return 1; }

static void fastnn_ck_block(int level, const float *x, ptrdiff_t nc, ptrdiff_t hp,
                            ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw, const float *w,
                            ptrdiff_t nf, float *out, ptrdiff_t oh, ptrdiff_t ow)
{
    (void)level; (void)x; (void)nc; (void)hp; (void)wp; (void)kh; (void)kw; (void)w;
    (void)nf; (void)out; (void)oh; (void)ow;
}

static void fastnn_ck_dw_block(int level, const float *x, ptrdiff_t nc, ptrdiff_t hp,
                               ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw, const float *d,
                               ptrdiff_t nf, ptrdiff_t fs, ptrdiff_t dr, ptrdiff_t oh,
                               ptrdiff_t ow, float *dw)
{
    (void)level; (void)x; (void)nc; (void)hp; (void)wp; (void)kh; (void)kw; (void)d;
    (void)nf; (void)fs; (void)dr; (void)oh; (void)ow; (void)dw;
}

static void fastnn_c3_dw_image(int level, const float *x, ptrdiff_t nc, ptrdiff_t hp,
                               ptrdiff_t wp, const float *d, ptrdiff_t nf, ptrdiff_t oh,
                               ptrdiff_t r, float *xs, float *dw)
{
    (void)level; (void)x; (void)nc; (void)hp; (void)wp; (void)d; (void)nf; (void)oh;
    (void)r; (void)xs; (void)dw;
}

static void fastnn_c3_image(int level, const float *x, ptrdiff_t nc, ptrdiff_t hp,
                            ptrdiff_t wp, const float *w, ptrdiff_t nf, float *out,
                            ptrdiff_t oh, ptrdiff_t ow)
{
    (void)level; (void)x; (void)nc; (void)hp; (void)wp; (void)w; (void)nf; (void)out;
    (void)oh; (void)ow;
}

#endif
#endif
