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
constexpr int64_t MC = 96;    // rows of C per task: a multiple of every MR below
constexpr int64_t NCB = 384;  // columns of C per task: a multiple of every NR below
constexpr int MAX_MR = 12, MAX_NR = 32;

using Kernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool zero);

// C[MR x 32] = chain over kc, from C (zero=false) or 0; A packed [kc][MR], B packed [kc][32].
template <int MR>
__attribute__((target("avx512f"))) void kernel_avx512(int64_t kc, const float* __restrict a,
                                                      const float* __restrict b, float* c, int64_t ldc, bool zero) {
  __m512 lo[MR], hi[MR];
  for (int i = 0; i < MR; i++) {
    lo[i] = zero ? _mm512_setzero_ps() : _mm512_loadu_ps(c + i * ldc);
    hi[i] = zero ? _mm512_setzero_ps() : _mm512_loadu_ps(c + i * ldc + 16);
  }
  for (int64_t p = 0; p < kc; p++) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      lo[i] = _mm512_fmadd_ps(ai, b0, lo[i]);
      hi[i] = _mm512_fmadd_ps(ai, b1, hi[i]);
    }
    a += MR;
    b += 32;
  }
  for (int i = 0; i < MR; i++) {
    _mm512_storeu_ps(c + i * ldc, lo[i]);
    _mm512_storeu_ps(c + i * ldc + 16, hi[i]);
  }
}

// C[MR x 16] likewise, eight lanes at a time: per element the same chain as kernel_avx512.
template <int MR>
__attribute__((target("avx2,fma"))) void kernel_avx2(int64_t kc, const float* __restrict a,
                                                     const float* __restrict b, float* c, int64_t ldc, bool zero) {
  __m256 lo[MR], hi[MR];
  for (int i = 0; i < MR; i++) {
    lo[i] = zero ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc);
    hi[i] = zero ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc + 8);
  }
  for (int64_t p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
      hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
    }
    a += MR;
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
  if (allow_avx512 && __builtin_cpu_supports("avx512f")) return {12, 32, &kernel_avx512<12>, "avx512"};
  return {6, 16, &kernel_avx2<6>, "avx2"};
}

// A[0:m, 0:kc] (strides rs, cs) into panels of `mr` rows, [panel][k][mr]; rows past m are zero.
inline void pack_rows(const float* A, int64_t rs, int64_t cs, int64_t m, int64_t kc, int mr, float* out) {
  for (int64_t i = 0; i < m; i += mr) {
    const int64_t rows = std::min<int64_t>(mr, m - i);
    const float* src = A + i * rs;
    if (cs == 1) {  // row-major rows: read each row along k, scatter into the panel
      for (int64_t r = 0; r < rows; r++)
        for (int64_t p = 0; p < kc; p++) out[p * mr + r] = src[r * rs + p];
      for (int64_t r = rows; r < mr; r++)
        for (int64_t p = 0; p < kc; p++) out[p * mr + r] = 0.f;
    } else {
      for (int64_t p = 0; p < kc; p++) {
        int64_t r = 0;
        for (; r < rows; r++) out[p * mr + r] = src[r * rs + p * cs];
        for (; r < mr; r++) out[p * mr + r] = 0.f;
      }
    }
    out += kc * mr;
  }
}

// B[0:kc, 0:n] (strides rs, cs) into panels of `nr` columns, [panel][k][nr]; columns past n are zero.
inline void pack_cols(const float* B, int64_t rs, int64_t cs, int64_t kc, int64_t n, int nr, float* out) {
  for (int64_t j = 0; j < n; j += nr) {
    const int64_t cols = std::min<int64_t>(nr, n - j);
    const float* src = B + j * cs;
    if (cs == 1) {
      for (int64_t p = 0; p < kc; p++) {
        std::memcpy(out + p * nr, src + p * rs, cols * sizeof(float));
        std::fill(out + p * nr + cols, out + (p + 1) * nr, 0.f);
      }
    } else {
      for (int64_t q = 0; q < cols; q++)
        for (int64_t p = 0; p < kc; p++) out[p * nr + q] = src[q * cs + p * rs];
      for (int64_t q = cols; q < nr; q++)
        for (int64_t p = 0; p < kc; p++) out[p * nr + q] = 0.f;
    }
    out += kc * nr;
  }
}

struct Matrix {
  const float* data;
  int64_t rs, cs;  // element strides of rows and columns
};

// C (row-major, leading dimension ldc) = the chain of A[M,K] B[K,N], from C or from 0 (`zero`).
inline void gemm_tiled(int64_t M, int64_t N, int64_t K, Matrix A, Matrix B, float* C, int64_t ldc, bool zero,
                       const Tiling& t) {
  const int mr = t.mr, nr = t.nr;
  const int64_t Mp = (M + mr - 1) / mr * mr, Np = (N + nr - 1) / nr * nr, kmax = std::min(K, KC);
  std::unique_ptr<float[]> apack(new float[Mp * kmax]), bpack(new float[Np * kmax]);
  float *ap = apack.get(), *bp = bpack.get();
  const int64_t mpanels = Mp / mr, npanels = Np / nr;
  const int64_t mtasks = (M + MC - 1) / MC, ntasks = (N + NCB - 1) / NCB;
  for (int64_t p0 = 0; p0 < K; p0 += KC) {
    const int64_t kc = std::min(KC, K - p0);
    const bool first = zero && p0 == 0;
    at::parallel_for(0, mpanels + npanels, 8, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; s++) {
        if (s < mpanels) {
          const int64_t i = s * mr;
          pack_rows(A.data + i * A.rs + p0 * A.cs, A.rs, A.cs, std::min<int64_t>(mr, M - i), kc, mr, ap + i * kc);
        } else {
          const int64_t j = (s - mpanels) * nr;
          pack_cols(B.data + p0 * B.rs + j * B.cs, B.rs, B.cs, kc, std::min<int64_t>(nr, N - j), nr, bp + j * kc);
        }
      }
    });
    at::parallel_for(0, mtasks * ntasks, 1, [&](int64_t begin, int64_t end) {
      alignas(64) float edge[MAX_MR * MAX_NR];
      for (int64_t task = begin; task < end; task++) {
        const int64_t i0 = task / ntasks * MC, j0 = task % ntasks * NCB;
        const int64_t i1 = std::min(M, i0 + MC), j1 = std::min(N, j0 + NCB);
        for (int64_t j = j0; j < j1; j += nr) {
          const int64_t cols = std::min<int64_t>(nr, j1 - j);
          for (int64_t i = i0; i < i1; i += mr) {
            const int64_t rows = std::min<int64_t>(mr, i1 - i);
            float* c = C + i * ldc + j;
            if (rows == mr && cols == nr) {
              t.kernel(kc, ap + i * kc, bp + j * kc, c, ldc, first);
              continue;
            }
            // An edge tile: the same kernel on a full-size copy; only the valid part goes back.
            if (!first)
              for (int64_t r = 0; r < rows; r++) std::memcpy(edge + r * nr, c + r * ldc, cols * sizeof(float));
            t.kernel(kc, ap + i * kc, bp + j * kc, edge, nr, first);
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
    std::unique_ptr<float[]> ct(new float[N * M]);
    if (!zero)
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) ct[j * M + i] = C[i * ldc + j];
    gemm_tiled(N, M, K, Matrix{B.data, B.cs, B.rs}, Matrix{A.data, A.cs, A.rs}, ct.get(), M, zero, t);
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = ct[j * M + i];
    return;
  }
  gemm_tiled(M, N, K, A, B, C, ldc, zero, t);
}

}  // namespace repro_portable
