// repro's fixed-order float32 GEMM (docs/portable.md).
//
// The arithmetic is the specification: every element of C is ONE fused-multiply-add chain over k
// in ascending order,
//
//     c = init;  for k in 0..K-1:  c = fma(A[i,k], B[k,j], c)
//
// with `init` either 0 or C's value on entry. Tiling, packing, the k blocks (the chain continues
// from C across them), the vector width (AVX2 or AVX-512), the edge tiles and the thread count are
// cache and speed choices only: none of them changes a bit. fma(a, b, c) == fma(b, a, c), so the
// operands may also swap roles (C^T = B^T A^T) to waste less padding.
//
// No ATen operator is called here (only at::parallel_for), so nothing dispatches inside a parallel
// region. Compiled with -ffp-contract=off: the only fused operations are the explicit ones.
#pragma once

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

namespace repro_portable {

constexpr int64_t KC = 256;   // k rows per packed block (fits the micro-panels in L1/L2)
constexpr int64_t MC = 96;    // rows of C per task: a multiple of every MR below (8 and 6)
constexpr int64_t NCB = 384;  // columns of C per task: a multiple of every NR below
constexpr int64_t NC = 1024;  // columns of C per pass over K: a multiple of NCB-friendly NR, B block <= 1 MiB
constexpr int MAX_MR = 8, MAX_NR = 32;

// A micro-kernel: C[MR x NR] (leading dimension ldc) = the chain over kc, from C (zero=false) or
// from 0. A[i, p] is at a[i * ars + p * acs]: read in place when A is row-major, else packed [kc][MR];
// B is packed [kc][NR].
using Kernel = void (*)(int64_t kc, const float* a, int64_t ars, int64_t acs, const float* b, float* c, int64_t ldc,
                        bool zero);

// 8 x 32, its sixteen accumulators named one by one (an array of them went through the stack at
// each call's start and end); the lines of C it will write are prefetched when it starts from 0.
#define R8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
template <int MR>
__attribute__((target("avx512f"))) void kernel_avx512(int64_t kc, const float* a, int64_t ars, int64_t acs,
                                                      const float* __restrict b, float* c, int64_t ldc, bool zero) {
  static_assert(MR == 8, "the AVX-512 kernel is 8 x 32");
#define DECL(i) __m512 lo##i, hi##i;
  R8(DECL)
#undef DECL
  if (zero) {
#define ZERO(i) lo##i = _mm512_setzero_ps(); hi##i = _mm512_setzero_ps(); \
  _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0); \
  _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
    R8(ZERO)
#undef ZERO
  } else {
#define LOAD(i) lo##i = _mm512_loadu_ps(c + i * ldc); hi##i = _mm512_loadu_ps(c + i * ldc + 16);
    R8(LOAD)
#undef LOAD
  }
  const int64_t r1 = ars, r2 = 2 * ars, r3 = 3 * ars, r4 = 4 * ars, r5 = 5 * ars, r6 = 6 * ars, r7 = 7 * ars;
  for (int64_t p = 0; p < kc; p++) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
    const float* ap = a + p * acs;
    __m512 x;
#define STEP(i, off) x = _mm512_set1_ps(ap[off]); lo##i = _mm512_fmadd_ps(x, b0, lo##i); hi##i = _mm512_fmadd_ps(x, b1, hi##i);
    STEP(0, 0) STEP(1, r1) STEP(2, r2) STEP(3, r3) STEP(4, r4) STEP(5, r5) STEP(6, r6) STEP(7, r7)
#undef STEP
    b += 32;
  }
#define STORE(i) _mm512_storeu_ps(c + i * ldc, lo##i); _mm512_storeu_ps(c + i * ldc + 16, hi##i);
  R8(STORE)
#undef STORE
}

// The same chain per element, eight lanes at a time.
template <int MR>
__attribute__((target("avx2,fma"))) void kernel_avx2(int64_t kc, const float* a, int64_t ars, int64_t acs,
                                                     const float* __restrict b, float* c, int64_t ldc, bool zero) {
  __m256 lo[MR], hi[MR];
  for (int i = 0; i < MR; i++) {
    lo[i] = zero ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc);
    hi[i] = zero ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc + 8);
  }
  for (int64_t p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    const float* ap = a + p * acs;
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const __m256 ai = _mm256_broadcast_ss(ap + i * ars);
      lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
      hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
    }
    b += 16;
  }
  for (int i = 0; i < MR; i++) {
    _mm256_storeu_ps(c + i * ldc, lo[i]);
    _mm256_storeu_ps(c + i * ldc + 8, hi[i]);
  }
}

struct Tiling {
  int mr, nr;
  Kernel kernel;
  const char* isa;
};

// The widest kernel this CPU runs (or AVX2 when `allow_avx512` is off, for tests): speed only.
inline Tiling tiling(bool allow_avx512) {
  if (allow_avx512 && __builtin_cpu_supports("avx512f")) return {8, 32, &kernel_avx512<8>, "avx512"};
  return {6, 16, &kernel_avx2<6>, "avx2"};
}

// ---- packing: exact copies into the layouts the kernels read (no arithmetic, so any ISA) ----

// Eight rows of eight floats in, their transpose out: r[t] becomes column t.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// `lanes` (1..8) floats of v to out.
inline void store_lanes(float* out, __m256 v, int lanes) {
  if (lanes == 8) {
    _mm256_storeu_ps(out, v);
    return;
  }
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  std::memcpy(out, tmp, lanes * sizeof(float));
}

// 8 (or fewer, the rest zero) vectors of 8 floats at src + i * stride, i < count.
inline void load_rows(const float* src, int64_t stride, int count, __m256 r[8]) {
  for (int i = 0; i < 8; i++) r[i] = i < count ? _mm256_loadu_ps(src + i * stride) : _mm256_setzero_ps();
}

// Strided matrix X[0:rows, 0:kc] (X[i, p] at x + i * rs + p * cs) into [p][width], rows past `rows` zero:
// the k-major layout of one micro-panel. `rows` <= `width` <= 32.
inline void pack_panel(const float* x, int64_t rs, int64_t cs, int64_t rows, int64_t kc, int width, float* out) {
  int64_t p = 0;
  if (cs == 1 && rows > 0) {  // each row runs along k: transpose 8x8 blocks
    for (; p + 8 <= kc; p += 8)
      for (int i0 = 0; i0 < width; i0 += 8) {
        const int count = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(8, rows - i0)));
        __m256 r[8];
        load_rows(x + i0 * rs + p, rs, count, r);
        transpose8(r);
        for (int t = 0; t < 8; t++) store_lanes(out + (p + t) * width + i0, r[t], std::min(8, width - i0));
      }
  } else if (rs == 1) {  // each k already runs along the rows: copy
    for (; p < kc; p++) {
      std::memcpy(out + p * width, x + p * cs, rows * sizeof(float));
      std::fill(out + p * width + rows, out + (p + 1) * width, 0.f);
    }
  }
  for (; p < kc; p++)  // what is left, in any layout
    for (int64_t i = 0; i < width; i++) out[p * width + i] = i < rows ? x[i * rs + p * cs] : 0.f;
}

// B[0:kc, 0:n] into panels of `nr` columns, [panel][k][nr]; columns past n are zero.
inline void pack_cols(const float* B, int64_t rs, int64_t cs, int64_t kc, int64_t n, int nr, float* out) {
  for (int64_t j = 0; j < n; j += nr, out += kc * nr)
    pack_panel(B + j * cs, cs, rs, std::min<int64_t>(nr, n - j), kc, nr, out);
}

// A buffer per thread that only grows: packing allocates nothing per call. Slots 0-3 are the GEMM's;
// HEAD_SCRATCH and the two after it hold one attention head's matrices (attention.h).
constexpr int SCRATCH_SLOTS = 7, HEAD_SCRATCH = 4;
inline float* scratch(int which, int64_t floats) {
  thread_local std::unique_ptr<float[]> buffers[SCRATCH_SLOTS];
  thread_local int64_t sizes[SCRATCH_SLOTS] = {};
  if (sizes[which] < floats) {
    buffers[which].reset(new float[floats]);
    sizes[which] = floats;
  }
  return buffers[which].get();
}

struct Matrix {
  const float* data;
  int64_t rs, cs;  // element strides of rows and columns
};

// C (row-major, leading dimension ldc) = the chain of A[M,K] B[K,N], from C or from 0 (`zero`).
// B is packed one k block at a time, shared by every task. A row-major A is read in place (each cache
// line serves 16 steps of k), except that the rows of a last, short row tile are copied into a
// zero-padded panel so that no kernel reads past A; any other A is packed too (a column-major A read
// in place would use half of each line it loads: measured 1.3-1.4x MKL's time, 1.15x packed).
inline void gemm_tiled(int64_t M, int64_t N, int64_t K, Matrix A, Matrix B, float* C, int64_t ldc, bool zero,
                       const Tiling& t) {
  const int mr = t.mr, nr = t.nr;
  const int64_t Np = (N + nr - 1) / nr * nr, npanels = Np / nr;
  float* bp = scratch(1, Np * std::min(K, KC));
  const bool pack_a = A.cs != 1;
  float* ap = pack_a ? scratch(2, (M + mr - 1) / mr * mr * std::min(K, KC)) : nullptr;
  const int64_t mtasks = (M + MC - 1) / MC, ntasks = (N + NCB - 1) / NCB;
  for (int64_t p0 = 0; p0 < K; p0 += KC) {
    const int64_t kc = std::min(KC, K - p0);
    const bool first = zero && p0 == 0;
    const int64_t mpanels = pack_a ? (M + mr - 1) / mr : 0;
    at::parallel_for(0, npanels + mpanels, 4, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; s++) {
        if (s < npanels) {
          const int64_t j = s * nr;
          pack_cols(B.data + p0 * B.rs + j * B.cs, B.rs, B.cs, kc, std::min<int64_t>(nr, N - j), nr, bp + j * kc);
        } else {
          const int64_t i = (s - npanels) * mr;
          pack_panel(A.data + i * A.rs + p0 * A.cs, A.rs, A.cs, std::min<int64_t>(mr, M - i), kc, mr, ap + i * kc);
        }
      }
    });
    at::parallel_for(0, mtasks * ntasks, 1, [&](int64_t begin, int64_t end) {
      alignas(64) float edge[MAX_MR * MAX_NR];
      for (int64_t task = begin; task < end; task++) {
        const int64_t i0 = task / ntasks * MC, j0 = task % ntasks * NCB;
        const int64_t i1 = std::min(M, i0 + MC), j1 = std::min(N, j0 + NCB);
        const int64_t short_rows = (i1 - i0) % mr, full_end = i1 - short_rows;
        const bool tail_copy = short_rows && !pack_a;  // the short tile's rows, zero-padded
        float* tail = tail_copy ? scratch(0, kc * mr) : nullptr;
        if (tail_copy) pack_panel(A.data + full_end * A.rs + p0 * A.cs, A.rs, A.cs, short_rows, kc, mr, tail);
        for (int64_t j = j0; j < j1; j += nr) {
          const int64_t cols = std::min<int64_t>(nr, j1 - j);
          const float* bpan = bp + j * kc;
          for (int64_t i = i0; i < i1; i += mr) {
            const int64_t rows = std::min<int64_t>(mr, i1 - i);
            const bool packed = rows < mr;
            const float* a = pack_a ? ap + i * kc : packed ? tail : A.data + i * A.rs + p0 * A.cs;
            const int64_t ars = (pack_a || packed) ? 1 : A.rs, acs = (pack_a || packed) ? mr : A.cs;
            float* c = C + i * ldc + j;
            if (!first && i + mr < i1)  // the next tile's C lines, from memory while this tile computes
              for (int64_t r = 0; r < mr; r++) {
                _mm_prefetch(reinterpret_cast<const char*>(c + (mr + r) * ldc), _MM_HINT_T0);
                _mm_prefetch(reinterpret_cast<const char*>(c + (mr + r) * ldc + 16), _MM_HINT_T0);
              }
            if (!packed && cols == nr) {
              t.kernel(kc, a, ars, acs, bpan, c, ldc, first);
              continue;
            }
            // An edge tile: the same kernel on a full-size copy; only the valid part goes back.
            if (!first)
              for (int64_t r = 0; r < rows; r++) std::memcpy(edge + r * nr, c + r * ldc, cols * sizeof(float));
            t.kernel(kc, a, ars, acs, bpan, edge, nr, first);
            for (int64_t r = 0; r < rows; r++) std::memcpy(c + r * ldc, edge + r * nr, cols * sizeof(float));
          }
        }
      }
    });
  }
}

// The entry point: C[M,N] (row-major, leading dimension ldc) = chain(A B), from C or from 0. Picks
// the orientation that pads less; the bits are the same either way.
inline void gemm(int64_t M, int64_t N, int64_t K, Matrix A, Matrix B, float* C, int64_t ldc, bool zero,
                 bool allow_avx512) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (zero)
      for (int64_t i = 0; i < M; i++) std::fill(C + i * ldc, C + i * ldc + N, 0.f);
    return;
  }
  const Tiling t = tiling(allow_avx512);
  auto padded = [&](int64_t m, int64_t n) { return ((m + t.mr - 1) / t.mr) * ((n + t.nr - 1) / t.nr) * t.mr * t.nr; };
  if (padded(N, M) < padded(M, N)) {
    // C^T[N,M] = B^T A^T, written through C's transposed strides into a row-major scratch.
    float* ct = scratch(3, N * M);
    if (!zero)
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) ct[j * M + i] = C[i * ldc + j];
    gemm_tiled(N, M, K, Matrix{B.data, B.cs, B.rs}, Matrix{A.data, A.cs, A.rs}, ct, M, zero, t);
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = ct[j * M + i];
    return;
  }
  // Column chunks of at most NC: each chunk's packed B block (KC x NC) stays in L2 while A streams.
  for (int64_t j = 0; j < N; j += NC)
    gemm_tiled(M, std::min(NC, N - j), K, A, Matrix{B.data + j * B.cs, B.rs, B.cs}, C + j, ldc, zero, t);
}

}  // namespace repro_portable
