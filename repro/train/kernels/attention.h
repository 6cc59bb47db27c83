// Scaled dot-product attention for one (batch, head) slice, in a fixed order (docs/portable.md).
//
// torch's CPU flash-attention kernel calls MKL's GEMM from inside; repro's replaces it with the same
// mathematics written in the fixed-order GEMM of gemm.h and reductions that run in index order:
//   S    = scale * (Q K^T)                       each product one FMA chain; then one multiply
//   S'   = S masked: -inf where causal (j > i) or a boolean mask says no; + a float mask
//   m_i  = max_j S'_ij;  e_ij = exp(S'_ij - m_i);  l_i = sum_j e_ij in the fixed order of fixed_sum
//   P_ij = e_ij / l_i;   lse_i = m_i + log(l_i);   O = P V
// and backward (P recomputed exactly so):
//   dV = P^T dO;  dP = dO V^T;  D_i = fma chain over e of dO_ie O_ie;  dS_ij = P_ij (dP_ij - D_i) scale
//   dQ = dS K;  dK = dS^T Q
// A row with every position masked gets P = 0 and lse = -inf (as torch's math path's safe softmax).
// exp and log are the vector math of portable.cpp (the same bits at every vector width); the other
// elementwise steps are single IEEE operations, so any vectorization the compiler picks is exact.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <limits>
#include <memory>

#include "gemm.h"

namespace repro_portable {

// A strided view of one head: X[i, e] at data + i * rs + e (the last dimension is contiguous).
struct Rows {
  const float* data;
  int64_t rs;
};

// The mask of one head, if any: element (i, j) at data + i * rs + j * cs; float (added) or bool (keep).
struct Mask {
  const float* additive = nullptr;
  const bool* keep = nullptr;
  int64_t rs = 0, cs = 0;
};

using VectorFn = void (*)(bool log, const float* in, float* out, int64_t n);  // exp (log=false) or log

// One head's [Lq, Lk] matrices live in per-thread buffers beside the GEMM's own (gemm.h, scratch).
inline float* head_buffer(int which, int64_t floats) { return scratch(HEAD_SCRATCH + which, floats); }

// The sum of x[0:n] in a fixed order whatever the CPU: lane t (of 8) adds x[t], x[t + 8], ... in
// turn, then the lanes are added as ((0+1)+(2+3))+((4+5)+(6+7)). AVX2 code, which every supported
// CPU runs alike.
inline float fixed_sum(const float* x, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + j));
  alignas(32) float lane[8];
  _mm256_store_ps(lane, acc);
  for (int64_t t = 0; j + t < n; t++) lane[t] = lane[t] + x[j + t];  // the tail, each in its lane
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// The largest of x[0:n]. max is exact, so any order gives it (for inputs without NaN, which no
// finite training produces); 8 lanes at a time, in AVX2 code as everywhere here.
inline float row_max(const float* x, int64_t n) {
  __m256 m8 = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + j));
  alignas(32) float lane[8];
  _mm256_store_ps(lane, m8);
  float m = lane[0];
  for (int t = 1; t < 8; t++) m = lane[t] > m ? lane[t] : m;
  for (; j < n; j++) m = x[j] > m ? x[j] : m;
  return m;
}

// x[0:n] *= scale, then -inf from `from` on (the causal mask): exact elementwise steps.
inline void scale_and_mask(float* x, int64_t n, float scale, int64_t from) {
  const __m256 s8 = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), s8));
  for (; j < n; j++) x[j] = x[j] * scale;
  for (j = from; j < n; j++) x[j] = -std::numeric_limits<float>::infinity();
}

// x[0:n] = x - m, or x / l (exact elementwise steps, 8 lanes at a time).
inline void subtract(float* x, int64_t n, float m) {
  const __m256 m8 = _mm256_set1_ps(m);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_sub_ps(_mm256_loadu_ps(x + j), m8));
  for (; j < n; j++) x[j] = x[j] - m;
}

inline void divide(float* x, int64_t n, float l) {
  const __m256 l8 = _mm256_set1_ps(l);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_div_ps(_mm256_loadu_ps(x + j), l8));
  for (; j < n; j++) x[j] = x[j] / l;
}

// P [Lq, Lk] (row-major) and lse [Lq] for one head.
inline void attention_probs(int64_t Lq, int64_t Lk, int64_t E, Rows q, Rows k, float scale, bool causal,
                            const Mask& mask, VectorFn vmath, bool allow_avx512, float* P, float* lse) {
  constexpr float NEG_INF = -std::numeric_limits<float>::infinity();
  gemm(Lq, Lk, E, Matrix{q.data, q.rs, 1}, Matrix{k.data, 1, k.rs}, P, Lk, true, allow_avx512);
  for (int64_t i = 0; i < Lq; i++) {
    float* row = P + i * Lk;
    scale_and_mask(row, Lk, scale, causal ? std::min(i + 1, Lk) : Lk);
    if (mask.additive != nullptr)
      for (int64_t j = 0; j < Lk; j++) row[j] = row[j] + mask.additive[i * mask.rs + j * mask.cs];
    if (mask.keep != nullptr)
      for (int64_t j = 0; j < Lk; j++)
        if (!mask.keep[i * mask.rs + j * mask.cs]) row[j] = NEG_INF;
    const float m = row_max(row, Lk);
    if (m == NEG_INF) {  // every position masked
      for (int64_t j = 0; j < Lk; j++) row[j] = 0.f;
      lse[i] = NEG_INF;
      continue;
    }
    subtract(row, Lk, m);
    vmath(false, row, row, Lk);
    const float l = fixed_sum(row, Lk);
    divide(row, Lk, l);
    float log_l;
    vmath(true, &l, &log_l, 1);
    lse[i] = m + log_l;
  }
}

// O [Lq, Ev] (row stride o_rs) = P V for one head; lse [Lq].
inline void attention_forward(int64_t Lq, int64_t Lk, int64_t E, int64_t Ev, Rows q, Rows k, Rows v, float scale,
                              bool causal, const Mask& mask, VectorFn vmath, bool allow_avx512, float* o, int64_t o_rs,
                              float* lse) {
  float* P = head_buffer(0, Lq * Lk);
  attention_probs(Lq, Lk, E, q, k, scale, causal, mask, vmath, allow_avx512, P, lse);
  gemm(Lq, Ev, Lk, Matrix{P, Lk, 1}, Matrix{v.data, v.rs, 1}, o, o_rs, true, allow_avx512);
}

// dQ [Lq, E], dK [Lk, E], dV [Lk, Ev] (row strides dq_rs, dk_rs, dv_rs) for one head.
inline void attention_backward(int64_t Lq, int64_t Lk, int64_t E, int64_t Ev, Rows q, Rows k, Rows v, Rows o, Rows dout,
                               float scale, bool causal, const Mask& mask, VectorFn vmath, bool allow_avx512,
                               float* dq, int64_t dq_rs, float* dk, int64_t dk_rs, float* dv, int64_t dv_rs) {
  float *P = head_buffer(0, Lq * Lk), *dS = head_buffer(1, Lq * Lk), *lse = head_buffer(2, Lq);
  attention_probs(Lq, Lk, E, q, k, scale, causal, mask, vmath, allow_avx512, P, lse);
  // dV = P^T dO
  gemm(Lk, Ev, Lq, Matrix{P, 1, Lk}, Matrix{dout.data, dout.rs, 1}, dv, dv_rs, true, allow_avx512);
  // dP = dO V^T, into dS's buffer, then dS = P (dP - D) scale
  gemm(Lq, Lk, Ev, Matrix{dout.data, dout.rs, 1}, Matrix{v.data, 1, v.rs}, dS, Lk, true, allow_avx512);
  const __m256 s8 = _mm256_set1_ps(scale);
  for (int64_t i = 0; i < Lq; i++) {
    float d = 0.f;
    for (int64_t e = 0; e < Ev; e++) d = std::fma(dout.data[i * dout.rs + e], o.data[i * o.rs + e], d);
    float* ds = dS + i * Lk;
    const float* p = P + i * Lk;
    const __m256 d8 = _mm256_set1_ps(d);
    int64_t j = 0;
    for (; j + 8 <= Lk; j += 8)  // three roundings: the difference, the product, the scale
      _mm256_storeu_ps(ds + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(p + j),
                                                           _mm256_sub_ps(_mm256_loadu_ps(ds + j), d8)), s8));
    for (; j < Lk; j++) ds[j] = p[j] * (ds[j] - d) * scale;
  }
  // dQ = dS K;  dK = dS^T Q
  gemm(Lq, E, Lk, Matrix{dS, Lk, 1}, Matrix{k.data, k.rs, 1}, dq, dq_rs, true, allow_avx512);
  gemm(Lk, E, Lq, Matrix{dS, 1, Lk}, Matrix{q.data, q.rs, 1}, dk, dk_rs, true, allow_avx512);
}

}  // namespace repro_portable
