// repro's portable CPU kernels: the same bits on every x86-64 CPU with AVX2 (docs/portable.md).
//
// torch's CPU wheels hand GEMM, convolution, most transcendental functions and Bernoulli sampling
// to MKL or oneDNN, which pick their code by CPU vendor and model. Loaded into a build process,
// this library replaces those kernels at the CPU dispatch key with ones whose arithmetic is fixed:
//   - mm, addmm, bmm, baddbmm, addmv (mv), dot, vdot: the fixed-order FMA chain of gemm.h;
//   - convolution (1d and 2d) and its backward: im2col/col2im around the same GEMM;
//   - exp, log, log2, log10, sqrt, tanh, erf, erfc, erfinv, sin, cos, tan, asin, acos, atan:
//     ATen's own AVX2 vector code (SLEEF and IEEE sqrt), never MKL's vector math library;
//   - r_bernoulli_(p): a comparison with ATen's uniform_ (the CPU generator), never MKL's VSL;
//   - scaled_dot_product_attention: always the math backend (its flash kernel calls MKL's GEMM).
// Integer types keep ATen's own kernels, which are portable. Any other dtype (float64 GEMM, complex,
// half precision through oneDNN), a transposed or 3d convolution, is "unportable": refused with
// an error that names the operator (the default), or recorded and run by torch's own kernel.
//
// Compiled with -mavx2 -mfma -ffp-contract=off and CPU_CAPABILITY=AVX2, so at::vec::Vectorized is
// exactly the AVX2 code that ATen itself runs at ATEN_CPU_CAPABILITY=avx2.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/Resize.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/addmv_cpu_dispatch.h>
#include <ATen/ops/baddbmm_cpu_dispatch.h>
#include <ATen/ops/bernoulli_cpu_dispatch.h>
#include <ATen/ops/bmm_cpu_dispatch.h>
#include <ATen/ops/convolution_backward_compositeexplicitautograd_dispatch.h>
#include <ATen/ops/convolution_compositeexplicitautograd_dispatch.h>
#include <ATen/ops/dot_cpu_dispatch.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_for_cpu_backward_cpu_dispatch.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_for_cpu_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <ATen/ops/vdot_cpu_dispatch.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "attention.h"
#include "gemm.h"

// Each elementwise operator with its CPU fallback header.
#define REPRO_UNARY_OPS(X) \
  X(exp) X(log) X(log2) X(log10) X(sqrt) X(tanh) X(erf) X(erfc) X(erfinv) X(sin) X(cos) X(tan) X(asin) X(acos) X(atan)
#include <ATen/ops/acos_cpu_dispatch.h>
#include <ATen/ops/asin_cpu_dispatch.h>
#include <ATen/ops/atan_cpu_dispatch.h>
#include <ATen/ops/cos_cpu_dispatch.h>
#include <ATen/ops/erf_cpu_dispatch.h>
#include <ATen/ops/erfc_cpu_dispatch.h>
#include <ATen/ops/erfinv_cpu_dispatch.h>
#include <ATen/ops/exp_cpu_dispatch.h>
#include <ATen/ops/log10_cpu_dispatch.h>
#include <ATen/ops/log2_cpu_dispatch.h>
#include <ATen/ops/log_cpu_dispatch.h>
#include <ATen/ops/sin_cpu_dispatch.h>
#include <ATen/ops/sqrt_cpu_dispatch.h>
#include <ATen/ops/tan_cpu_dispatch.h>
#include <ATen/ops/tanh_cpu_dispatch.h>

namespace repro_portable {
namespace {

using at::Scalar;
using at::Tensor;

// ---- settings and the record of unportable calls (set once, from Python, before training) ----

struct Settings {
  bool allow_avx512 = true;  // speed only: the AVX2 and AVX-512 kernels give the same bits
  bool refuse = true;        // an unportable call raises (true) or is recorded and run by torch
};
Settings settings;
std::mutex seen_mutex;
std::set<std::string> seen;

// An operator call these kernels cannot make portable: refuse it, or record it and let torch run it.
// Returns true when the caller should fall back to torch's own kernel.
bool unportable(const char* op, const std::string& why) {
  if (settings.refuse) {
    TORCH_CHECK(false, "repro-portable: ", op, " ", why,
                " has no portable kernel; its bits would depend on this CPU's vendor and model");
  }
  std::lock_guard<std::mutex> lock(seen_mutex);
  seen.insert(std::string(op) + " (" + why + ")");
  return true;
}

std::string dtype_name(const Tensor& t) { return std::string("on ") + c10::toString(t.scalar_type()); }

bool is_float(const Tensor& t) { return t.scalar_type() == at::kFloat; }

bool is_reduced(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

Matrix view(const Tensor& t) { return Matrix{t.const_data_ptr<float>(), t.stride(0), t.stride(1)}; }

// ---- GEMM family ----

// out (a fresh, contiguous [M, N]) = beta * self + alpha * (a @ b), with self broadcast to [M, N].
// alpha == 1: one chain started from beta*self (or 0). Otherwise the chain from 0, then ATen's
// add(out, d, alpha) (its AVX2 fmadd), so every step is fixed.
void addmm_into(Tensor& out, const Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta,
                const Scalar& alpha) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const bool beta_zero = beta.toDouble() == 0.0, alpha_one = alpha.toDouble() == 1.0;
  if (!beta_zero) {
    out.copy_(self.expand({M, N}));
    if (beta.toDouble() != 1.0) out.mul_(beta);
  }
  if (alpha_one) {
    gemm(M, N, K, view(a), view(b), out.data_ptr<float>(), N, beta_zero, settings.allow_avx512);
    return;
  }
  Tensor d = at::empty({M, N}, a.options());
  gemm(M, N, K, view(a), view(b), d.data_ptr<float>(), N, true, settings.allow_avx512);
  if (beta_zero) out.zero_();
  out.add_(d, alpha);
}

// Whether a GEMM-family call takes our kernel (float32). Integer types keep torch's own kernels
// (portable), mismatched dtypes go to torch (which raises its usual error), and any other dtype is
// unportable: refused, or recorded and run by torch.
bool ours(const char* op, std::initializer_list<const Tensor*> ts) {
  const auto type = (*ts.begin())->scalar_type();
  for (const Tensor* t : ts)
    if (t->scalar_type() != type) return false;
  if (type == at::kFloat || is_reduced(type)) return true;
  if (!at::isIntegralType(type, /*includeBool=*/true)) unportable(op, dtype_name(**ts.begin()));
  return false;
}

// bfloat16 and half (autocast's matmuls): exact to float32, the same chain, one rounding back.
Tensor up(const Tensor& t) { return is_reduced(t.scalar_type()) ? t.to(at::kFloat) : t; }

Tensor r_mm(const Tensor& self, const Tensor& mat2) {
  if (!ours("aten::mm", {&self, &mat2}) || self.dim() != 2 || mat2.dim() != 2)
    return at::cpu::mm(self, mat2);
  if (is_reduced(self.scalar_type())) return r_mm(up(self), up(mat2)).to(self.scalar_type());
  if (self.size(1) != mat2.size(0)) return at::cpu::mm(self, mat2);  // torch's own shape error
  Tensor out = at::empty({self.size(0), mat2.size(1)}, self.options());
  gemm(self.size(0), mat2.size(1), self.size(1), view(self), view(mat2), out.data_ptr<float>(), mat2.size(1), true,
       settings.allow_avx512);
  return out;
}

Tensor r_addmm(const Tensor& self, const Tensor& mat1, const Tensor& mat2, const Scalar& beta, const Scalar& alpha) {
  if (!ours("aten::addmm", {&self, &mat1, &mat2}) || mat1.dim() != 2 || mat2.dim() != 2)
    return at::cpu::addmm(self, mat1, mat2, beta, alpha);
  if (is_reduced(mat1.scalar_type()))
    return r_addmm(up(self), up(mat1), up(mat2), beta, alpha).to(mat1.scalar_type());
  if (mat1.size(1) != mat2.size(0)) return at::cpu::addmm(self, mat1, mat2, beta, alpha);
  Tensor out = at::empty({mat1.size(0), mat2.size(1)}, mat1.options());
  addmm_into(out, self, mat1, mat2, beta, alpha);
  return out;
}

// out[B, M, N] = beta * self + alpha * (b1 @ b2), batch by batch. Many small products run one per
// thread, a few large ones one after another on every thread: the bits are the same either way.
Tensor r_baddbmm(const Tensor& self, const Tensor& b1, const Tensor& b2, const Scalar& beta, const Scalar& alpha) {
  if (!ours("aten::baddbmm", {&self, &b1, &b2}) || b1.dim() != 3 || b2.dim() != 3)
    return at::cpu::baddbmm(self, b1, b2, beta, alpha);
  if (is_reduced(b1.scalar_type())) return r_baddbmm(up(self), up(b1), up(b2), beta, alpha).to(b1.scalar_type());
  const int64_t B = b1.size(0), M = b1.size(1), K = b1.size(2), N = b2.size(2);
  if (b2.size(0) != B || b2.size(1) != K) return at::cpu::baddbmm(self, b1, b2, beta, alpha);
  Tensor out = at::empty({B, M, N}, b1.options());
  const bool beta_zero = beta.toDouble() == 0.0, alpha_one = alpha.toDouble() == 1.0;
  if (!beta_zero) {
    out.copy_(self.expand({B, M, N}));
    if (beta.toDouble() != 1.0) out.mul_(beta);
  }
  Tensor d = alpha_one ? out : at::empty({B, M, N}, b1.options());
  const float *p1 = b1.const_data_ptr<float>(), *p2 = b2.const_data_ptr<float>();
  float* pd = d.data_ptr<float>();
  const bool zero = beta_zero || !alpha_one;
  auto one = [&](int64_t i) {
    gemm(M, N, K, Matrix{p1 + i * b1.stride(0), b1.stride(1), b1.stride(2)},
         Matrix{p2 + i * b2.stride(0), b2.stride(1), b2.stride(2)}, pd + i * M * N, N, zero, settings.allow_avx512);
  };
  const bool small = M * N * K < (int64_t{1} << 21);
  if (small && B > 1) {
    at::parallel_for(0, B, 1, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; i++) one(i);
    });
  } else {
    for (int64_t i = 0; i < B; i++) one(i);
  }
  if (!alpha_one) {
    if (beta_zero) out.zero_();
    out.add_(d, alpha);
  }
  return out;
}

Tensor r_bmm(const Tensor& self, const Tensor& mat2) {
  if (!ours("aten::bmm", {&self, &mat2}) || self.dim() != 3 || mat2.dim() != 3)
    return at::cpu::bmm(self, mat2);
  return r_baddbmm(at::empty({0}, self.options()), self, mat2, 0, 1);
}

// addmv (and mv, which torch builds from it): the GEMM with N = 1, so the same chain per element.
Tensor r_addmv(const Tensor& self, const Tensor& mat, const Tensor& vec, const Scalar& beta, const Scalar& alpha) {
  if (!ours("aten::addmv", {&self, &mat, &vec}) || mat.dim() != 2 || vec.dim() != 1)
    return at::cpu::addmv(self, mat, vec, beta, alpha);
  if (is_reduced(mat.scalar_type())) return r_addmv(up(self), up(mat), up(vec), beta, alpha).to(mat.scalar_type());
  if (mat.size(1) != vec.size(0)) return at::cpu::addmv(self, mat, vec, beta, alpha);
  Tensor out = at::empty({mat.size(0), 1}, mat.options());
  addmm_into(out, self.dim() == 1 ? self.unsqueeze(1) : self, mat, vec.unsqueeze(1), beta, alpha);
  return out.squeeze(1);
}

// The out= and in-place forms of the products above: ours computed as a new tensor, then copied into
// `out` (resized first, as torch's own out= kernels do) or into self, so every form has the functional
// form's bits; torch's CPU kernel wherever `ours` declines the call. One pair of macros writes them all.
Tensor& into(Tensor& out, const Tensor& result) {
  at::native::resize_output(out, result.sizes());
  return out.copy_(result);
}

#define REPRO_PRODUCT_OUT(op)                                                                          \
  Tensor& r_##op##_out(const Tensor& self, const Tensor& mat2, Tensor& out) {                         \
    if (!ours("aten::" #op ".out", {&self, &mat2, &out})) return at::cpu::op##_out(out, self, mat2);  \
    return into(out, r_##op(self, mat2));                                                              \
  }
#define REPRO_ADD_PRODUCT_FORMS(op)                                                                    \
  Tensor& r_##op##_out(const Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta,       \
                       const Scalar& alpha, Tensor& out) {                                             \
    if (!ours("aten::" #op ".out", {&self, &a, &b, &out}))                                             \
      return at::cpu::op##_out(out, self, a, b, beta, alpha);                                          \
    return into(out, r_##op(self, a, b, beta, alpha));                                                 \
  }                                                                                                    \
  Tensor& r_##op##_(Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta,                \
                     const Scalar& alpha) {                                                            \
    if (!ours("aten::" #op "_", {&self, &a, &b})) return at::cpu::op##_(self, a, b, beta, alpha);      \
    return self.copy_(r_##op(self, a, b, beta, alpha));                                                \
  }
REPRO_PRODUCT_OUT(mm)
REPRO_PRODUCT_OUT(bmm)
REPRO_ADD_PRODUCT_FORMS(addmm)
REPRO_ADD_PRODUCT_FORMS(baddbmm)
REPRO_ADD_PRODUCT_FORMS(addmv)

// One chain over k from 0: fma(a[k], b[k], acc). std::fma compiles to the FMA instruction (-mfma).
// For real tensors vdot is dot.
bool dot_shapes(const Tensor& a, const Tensor& b) { return a.dim() == 1 && b.dim() == 1 && a.size(0) == b.size(0); }

Tensor dot_chain(const Tensor& self, const Tensor& other) {
  const float *a = self.const_data_ptr<float>(), *b = other.const_data_ptr<float>();
  const int64_t n = self.size(0), sa = self.stride(0), sb = other.stride(0);
  float acc = 0.f;
  for (int64_t k = 0; k < n; k++) acc = std::fma(a[k * sa], b[k * sb], acc);
  return at::scalar_tensor(acc, self.options());
}

Tensor r_dot(const Tensor& self, const Tensor& other) {
  if (!ours("aten::dot", {&self, &other}) || !dot_shapes(self, other)) return at::cpu::dot(self, other);
  if (is_reduced(self.scalar_type())) return dot_chain(up(self), up(other)).to(self.scalar_type());
  return dot_chain(self, other);
}

Tensor r_vdot(const Tensor& self, const Tensor& other) {
  if (!ours("aten::vdot", {&self, &other}) || !dot_shapes(self, other)) return at::cpu::vdot(self, other);
  if (is_reduced(self.scalar_type())) return dot_chain(up(self), up(other)).to(self.scalar_type());
  return dot_chain(self, other);
}

// ---- convolution: im2col, the GEMM, col2im ----

struct Conv2d {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
};

// 1d arguments as 2d ones over a height of 1, so one 2d path serves both.
Conv2d as_2d(at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool one_d) {
  if (one_d) return {{1, stride[0]}, {0, padding[0]}, {1, dilation[0]}, groups};
  return {stride.vec(), padding.vec(), dilation.vec(), groups};
}

bool conv_portable(const char* op, const Tensor& input, const Tensor& weight, bool transposed) {
  const auto type = input.scalar_type();
  if (weight.scalar_type() != type) return false;  // torch raises its own error
  if (type != at::kFloat && !is_reduced(type)) return !unportable(op, dtype_name(input));
  if (transposed) return !unportable(op, "(transposed)");
  if (input.dim() != 3 && input.dim() != 4) return !unportable(op, "(" + std::to_string(input.dim() - 2) + "d)");
  return true;
}

// [N, G*rows, L] (rows per group) as [G, rows, N*L]: one GEMM per group then chains over (n, l) in order.
Tensor by_group(const Tensor& t, int64_t groups) {
  const int64_t N = t.size(0), rows = t.size(1) / groups, L = t.size(2);
  return t.view({N, groups, rows, L}).permute({1, 2, 0, 3}).contiguous();
}

// The inverse: [G, rows, N*L] back to [N, G*rows, L].
Tensor by_sample(const Tensor& t, int64_t N) {
  const int64_t G = t.size(0), rows = t.size(1), L = t.size(2) / N;
  return t.view({G, rows, N, L}).permute({2, 0, 1, 3}).reshape({N, G * rows, L});
}

struct ConvShape {
  Conv2d c;
  Tensor input, weight;  // 4d, contiguous
  int64_t N, Cout, kh, kw, Og, Kg;
};

ConvShape conv_shape(const Tensor& input, const Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                     at::IntArrayRef dilation, int64_t groups) {
  const bool one_d = input.dim() == 3;
  ConvShape s{as_2d(stride, padding, dilation, groups, one_d), (one_d ? input.unsqueeze(2) : input).contiguous(),
              (one_d ? weight.unsqueeze(2) : weight).contiguous(), 0, 0, 0, 0, 0, 0};
  s.N = s.input.size(0);
  s.Cout = s.weight.size(0);
  s.kh = s.weight.size(2);
  s.kw = s.weight.size(3);
  s.Og = s.Cout / groups;
  s.Kg = s.weight.size(1) * s.kh * s.kw;
  return s;
}

Tensor columns(const ConvShape& s) {  // [N, Cin*kh*kw, L]
  return at::im2col(s.input, {s.kh, s.kw}, s.c.dilation, s.c.padding, s.c.stride);
}

Tensor r_convolution(const Tensor& input, const Tensor& weight, const std::optional<Tensor>& bias,
                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
                   at::IntArrayRef output_padding, int64_t groups) {
  if (!conv_portable("aten::convolution", input, weight, transposed))
    return at::compositeexplicitautograd::convolution(input, weight, bias, stride, padding, dilation, transposed,
                                                      output_padding, groups);
  if (is_reduced(input.scalar_type())) {
    const std::optional<Tensor> b = bias.has_value() && bias->defined() ? std::optional<Tensor>(up(*bias)) : bias;
    return r_convolution(up(input), up(weight), b, stride, padding, dilation, transposed, output_padding, groups)
        .to(input.scalar_type());
  }
  const ConvShape s = conv_shape(input, weight, stride, padding, dilation, groups);
  const int64_t G = groups;
  const int64_t Hout = (s.input.size(2) + 2 * s.c.padding[0] - s.c.dilation[0] * (s.kh - 1) - 1) / s.c.stride[0] + 1;
  const int64_t Wout = (s.input.size(3) + 2 * s.c.padding[1] - s.c.dilation[1] * (s.kw - 1) - 1) / s.c.stride[1] + 1;
  const int64_t NL = s.N * Hout * Wout;
  const Tensor cols = by_group(columns(s), G);  // [G, Kg, N*L]
  Tensor out = at::empty({G, s.Og, NL}, s.input.options());
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) out.copy_(bias->reshape({G, s.Og, 1}).expand_as(out));
  const float *w = s.weight.const_data_ptr<float>(), *x = cols.const_data_ptr<float>();
  for (int64_t g = 0; g < G; g++)
    gemm(s.Og, NL, s.Kg, Matrix{w + g * s.Og * s.Kg, s.Kg, 1}, Matrix{x + g * s.Kg * NL, NL, 1},
         out.data_ptr<float>() + g * s.Og * NL, NL, !has_bias, settings.allow_avx512);
  Tensor y = by_sample(out, s.N).view({s.N, s.Cout, Hout, Wout});
  return input.dim() == 3 ? y.squeeze(2) : y;
}

std::tuple<Tensor, Tensor, Tensor> r_convolution_backward(
    const Tensor& grad_, const Tensor& input, const Tensor& weight, at::OptionalIntArrayRef bias_sizes,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
    at::IntArrayRef output_padding, int64_t groups, std::array<bool, 3> mask) {
  if (!conv_portable("aten::convolution_backward", input, weight, transposed) ||
      grad_.scalar_type() != input.scalar_type())
    return at::compositeexplicitautograd::convolution_backward(grad_, input, weight, bias_sizes, stride, padding,
                                                               dilation, transposed, output_padding, groups, mask);
  if (is_reduced(input.scalar_type())) {
    auto [gi, gw, gb] = r_convolution_backward(up(grad_), up(input), up(weight), bias_sizes, stride, padding, dilation,
                                               transposed, output_padding, groups, mask);
    const auto t = input.scalar_type();
    return {gi.defined() ? gi.to(t) : gi, gw.defined() ? gw.to(t) : gw, gb.defined() ? gb.to(t) : gb};
  }
  const ConvShape s = conv_shape(input, weight, stride, padding, dilation, groups);
  const int64_t G = groups;
  const Tensor grad4 = input.dim() == 3 ? grad_.unsqueeze(2) : grad_;
  const int64_t L = grad4.size(2) * grad4.size(3), NL = s.N * L;
  const Tensor gy = by_group(grad4.reshape({s.N, s.Cout, L}), G);  // [G, Og, N*L]
  const float *w = s.weight.const_data_ptr<float>(), *pg = gy.const_data_ptr<float>();
  Tensor grad_input, grad_weight, grad_bias;
  if (mask[0]) {  // columns = W_g^T grad_g, then col2im sums the overlapping patches
    Tensor gcols = at::empty({G, s.Kg, NL}, s.input.options());
    for (int64_t g = 0; g < G; g++)
      gemm(s.Kg, NL, s.Og, Matrix{w + g * s.Og * s.Kg, 1, s.Kg}, Matrix{pg + g * s.Og * NL, NL, 1},
           gcols.data_ptr<float>() + g * s.Kg * NL, NL, true, settings.allow_avx512);
    grad_input = at::col2im(by_sample(gcols, s.N), {s.input.size(2), s.input.size(3)}, {s.kh, s.kw}, s.c.dilation,
                            s.c.padding, s.c.stride);
    if (input.dim() == 3) grad_input = grad_input.squeeze(2);
  }
  if (mask[1]) {  // grad_g columns_g^T: one chain per weight over (sample, position) in order
    const Tensor cols = by_group(columns(s), G);  // [G, Kg, N*L]
    grad_weight = at::empty(s.weight.sizes(), s.weight.options());
    const float* x = cols.const_data_ptr<float>();
    for (int64_t g = 0; g < G; g++)
      gemm(s.Og, s.Kg, NL, Matrix{pg + g * s.Og * NL, NL, 1}, Matrix{x + g * s.Kg * NL, 1, NL},
           grad_weight.data_ptr<float>() + g * s.Og * s.Kg, s.Kg, true, settings.allow_avx512);
    if (input.dim() == 3) grad_weight = grad_weight.squeeze(2);
  }
  if (mask[2]) grad_bias = grad4.sum({0, 2, 3});
  return {grad_input, grad_weight, grad_bias};
}

// ---- Bernoulli sampling without MKL's VSL ----

Tensor& r_bernoulli_(Tensor& self, double p, std::optional<at::Generator> gen) {
  if (!is_float(self)) return at::cpu::bernoulli_(self, p, gen);
  TORCH_CHECK(0 <= p && p <= 1, "bernoulli_ expects p in [0, 1], but got p=", p);
  Tensor u = at::empty(self.sizes(), self.options()).uniform_(0, 1, gen);
  return self.copy_(u.lt(p));
}

// ---- elementwise: ATen's own AVX2 vector code, or SLEEF's AVX-512 code where it is the same ----

// The operators MKL's vector math would compute, in REPRO_UNARY_OPS order.
enum class Fn : int { exp, log, log2, log10, sqrt, tanh, erf, erfc, erfinv, sin, cos, tan, asin, acos, atan };

// tanh is SLEEF's 3.5-ulp tanhf (4x faster than the 1-ulp one ATen calls, and the same bits at both
// widths, like the others); every other function is what ATen runs at ATEN_CPU_CAPABILITY=avx2 (this
// file is compiled with CPU_CAPABILITY=AVX2).
extern "C" __m256 Sleef_tanhf8_u35avx2(__m256);

template <typename T>
at::vec::Vectorized<T> narrow_one(Fn f, at::vec::Vectorized<T> x) {
  if constexpr (std::is_same_v<T, float>) {
    if (f == Fn::tanh) return at::vec::Vectorized<float>(Sleef_tanhf8_u35avx2(x));
  }
  switch (f) {
    case Fn::exp: return x.exp();
    case Fn::log: return x.log();
    case Fn::log2: return x.log2();
    case Fn::log10: return x.log10();
    case Fn::sqrt: return x.sqrt();
    case Fn::tanh: return x.tanh();
    case Fn::erf: return x.erf();
    case Fn::erfc: return x.erfc();
    case Fn::erfinv: return x.erfinv();
    case Fn::sin: return x.sin();
    case Fn::cos: return x.cos();
    case Fn::tan: return x.tan();
    case Fn::asin: return x.asin();
    case Fn::acos: return x.acos();
    case Fn::atan: return x.atan();
  }
  return x;
}

template <typename T>
void narrow_map(Fn f, const T* in, T* out, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  at::vec::map([f](Vec x) { return narrow_one(f, x); }, out, in, n);
}

// SLEEF's 16-lane AVX-512 versions of the 8-lane functions above (same accuracy variant).
// Each was compared with the 8-lane AVX2 one on every one of the 2^32 float32 inputs and gives the
// same bits (`compare_widths`, scripts/check_vector_widths.py): so the wide path is a speed choice.
#define REPRO_WIDE_SLEEF(X) \
  X(exp, u10) X(log, u10) X(log2, u10) X(log10, u10) X(tanh, u35) X(erfc, u15) X(sin, u35) X(cos, u35) X(tan, u10) \
  X(asin, u10) X(acos, u10) X(atan, u10)
#define REPRO_DECLARE(fn, u) extern "C" __attribute__((target("avx512f"))) __m512 Sleef_##fn##f16_##u##avx512f(__m512);
REPRO_WIDE_SLEEF(REPRO_DECLARE)

__attribute__((target("avx512f"))) inline __m512 bit_and(__m512 a, __m512 b) {
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}
__attribute__((target("avx512f"))) inline __m512 bit_xor(__m512 a, __m512 b) {
  return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}

// ATen's AVX2 erf (vec256_float.h), operation for operation, on 16 lanes: every step is an IEEE
// operation or SLEEF's exp, so each lane gets the same bits as there.
__attribute__((target("avx512f"))) __m512 erf16(__m512 x) {
  const __m512 neg_zero = _mm512_set1_ps(-0.f), one = _mm512_set1_ps(1.0f), p = _mm512_set1_ps(0.3275911f);
  const __m512 p1 = _mm512_set1_ps(0.254829592f), p2 = _mm512_set1_ps(-0.284496736f);
  const __m512 p3 = _mm512_set1_ps(1.421413741f), p4 = _mm512_set1_ps(-1.453152027f);
  const __m512 p5 = _mm512_set1_ps(1.061405429f);
  const __m512 sign = bit_and(neg_zero, x), abs = bit_xor(sign, x);
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(p, abs, one));
  const __m512 r = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_fmadd_ps(p5, t, p4), t, p3), t, p2), t, p1);
  const __m512 e = bit_xor(neg_zero, Sleef_expf16_u10avx512f(bit_xor(neg_zero, _mm512_mul_ps(x, x))));
  return bit_xor(sign, _mm512_fmadd_ps(_mm512_mul_ps(e, t), r, one));
}

bool has_wide(Fn f) { return f != Fn::erfinv; }  // ATen's erfinv is scalar code: no wide twin

__attribute__((target("avx512f"))) __m512 wide_one(Fn f, __m512 x) {
  switch (f) {
#define REPRO_CASE(fn, u) case Fn::fn: return Sleef_##fn##f16_##u##avx512f(x);
    REPRO_WIDE_SLEEF(REPRO_CASE)
    case Fn::sqrt: return _mm512_sqrt_ps(x);
    case Fn::erf: return erf16(x);
    default: return x;  // erfinv: never asked (has_wide)
  }
}

__attribute__((target("avx512f"))) void wide_map(Fn f, const float* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, wide_one(f, _mm512_loadu_ps(in + i)));
  if (i < n) {  // the tail: masked lanes in, the rest zero (computed and dropped), like ATen's partial loads
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(out + i, m, wide_one(f, _mm512_maskz_loadu_ps(m, in + i)));
  }
}

bool use_wide(Fn f) { return settings.allow_avx512 && has_wide(f) && __builtin_cpu_supports("avx512f"); }

// out[i] = f(in[i]) over n dense elements, in parallel chunks (elementwise: the chunking decides no bit).
template <typename T>
void map_dense(Fn f, const T* in, T* out, int64_t n) {
  const bool wide = std::is_same_v<T, float> && use_wide(f);
  at::parallel_for(0, n, 4096, [&](int64_t s, int64_t e) {
    if constexpr (std::is_same_v<T, float>) {
      if (wide) return wide_map(f, in + s, out + s, e - s);
    }
    narrow_map(f, in + s, out + s, e - s);
  });
}

// The number of float32 bit patterns in [lo, hi) whose AVX2 and AVX-512 results differ (two NaNs,
// whatever their payloads, count as equal): the check behind the wide path, run by a test on a
// sample and by scripts/check_vector_widths.py on all 2^32.
int64_t compare_widths(Fn f, int64_t lo, int64_t hi) {
  if (!has_wide(f) || !__builtin_cpu_supports("avx512f")) return 0;
  std::atomic<int64_t> differ{0};
  at::parallel_for(lo, hi, 1 << 16, [&](int64_t s, int64_t e) {
    std::vector<uint32_t> in(4096);
    std::vector<float> a(4096), b(4096);
    for (int64_t base = s; base < e; base += 4096) {
      const int64_t n = std::min<int64_t>(4096, e - base);
      for (int64_t i = 0; i < n; i++) in[i] = static_cast<uint32_t>(base + i);
      const float* x = reinterpret_cast<const float*>(in.data());
      narrow_map(f, x, a.data(), n);
      wide_map(f, x, b.data(), n);
      for (int64_t i = 0; i < n; i++)
        if (std::memcmp(&a[i], &b[i], 4) != 0 && !(std::isnan(a[i]) && std::isnan(b[i]))) differ++;
    }
  });
  return differ.load();
}

bool unary_portable(const char* op, const Tensor& self) {
  const auto t = self.scalar_type();
  if (t == at::kFloat || t == at::kDouble) return true;
  if (at::isComplexType(t)) unportable(op, dtype_name(self));
  return false;  // integers (promoted), bool, half, bfloat16: ATen's own kernels, portable
}

void unary_into(Fn f, const Tensor& self, Tensor& out) {
  // `out` has self's sizes; both are dense with the same strides here, so storage order is element order.
  if (self.scalar_type() == at::kFloat)
    map_dense(f, self.const_data_ptr<float>(), out.data_ptr<float>(), self.numel());
  else
    map_dense(f, self.const_data_ptr<double>(), out.data_ptr<double>(), self.numel());
}

Tensor unary(Fn f, const Tensor& self) {
  const Tensor src = self.is_non_overlapping_and_dense() ? self : self.contiguous();
  Tensor out = at::empty_like(src);
  unary_into(f, src, out);
  return out;
}

Tensor& unary_out(Fn f, const Tensor& self, Tensor& out) {
  at::native::resize_output(out, self.sizes());
  if (self.is_non_overlapping_and_dense() && out.strides() == self.strides() && !self.is_same(out)) {
    unary_into(f, self, out);
    return out;
  }
  return out.copy_(unary(f, self));
}

Tensor& unary_inplace(Fn f, Tensor& self) {
  if (!self.is_non_overlapping_and_dense()) return self.copy_(unary(f, self));
  unary_into(f, self, self);
  return self;
}

#define REPRO_UNARY(name)                                                                                     \
  Tensor name##_fn(const Tensor& self) {                                                                      \
    if (!unary_portable("aten::" #name, self)) return at::cpu::name(self);                                    \
    return unary(Fn::name, self);                                                                             \
  }                                                                                                           \
  Tensor& name##_out_fn(const Tensor& self, Tensor& out) {                                                    \
    if (!unary_portable("aten::" #name ".out", self) || out.scalar_type() != self.scalar_type())              \
      return at::cpu::name##_out(out, self);                                                                  \
    return unary_out(Fn::name, self, out);                                                                    \
  }                                                                                                           \
  Tensor& name##_inplace_fn(Tensor& self) {                                                                   \
    if (!unary_portable("aten::" #name "_", self)) return at::cpu::name##_(self);                             \
    return unary_inplace(Fn::name, self);                                                                     \
  }
REPRO_UNARY_OPS(REPRO_UNARY)

Fn fn_named(const std::string& name) {
#define REPRO_NAME(op) if (name == #op) return Fn::op;
  REPRO_UNARY_OPS(REPRO_NAME)
  TORCH_CHECK(false, "repro-portable: no elementwise function named ", name);
}

int64_t compare_widths_named(const std::string& name, int64_t lo, int64_t hi) {
  return compare_widths(fn_named(name), lo, hi);
}

// ---- scaled dot-product attention: torch's CPU flash kernel, in a fixed order (attention.h) ----

void attention_vmath(bool log, const float* in, float* out, int64_t n) {
  const Fn f = log ? Fn::log : Fn::exp;
  if (use_wide(f)) return wide_map(f, in, out, n);
  narrow_map(f, in, out, n);
}

// q, k, v [B, H, L, E] with a contiguous last dimension (what torch hands its flash kernel).
bool attention_ours(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, double dropout_p) {
  const auto type = q.scalar_type();
  if (k.scalar_type() != type || v.scalar_type() != type || q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
  if (type != at::kFloat && !is_reduced(type)) return !unportable(op, dtype_name(q));
  if (dropout_p != 0.0) return !unportable(op, "(with dropout)");
  return q.size(0) == k.size(0) && q.size(1) == k.size(1) && k.sizes().slice(0, 3) == v.sizes().slice(0, 3);
}

Tensor last_dim_contiguous(const Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

float attention_scale(const Tensor& q, std::optional<double> scale) {
  return static_cast<float>(scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1))));
}

// The mask of head (b, h), from a mask broadcast to [B, H, Lq, Lk] (float or bool; kept alive by the caller).
Mask head_mask(const Tensor& mask, int64_t b, int64_t h) {
  Mask m;
  if (!mask.defined()) return m;
  const int64_t offset = b * mask.stride(0) + h * mask.stride(1);
  m.rs = mask.stride(2);
  m.cs = mask.stride(3);
  if (mask.scalar_type() == at::kBool)
    m.keep = mask.const_data_ptr<bool>() + offset;
  else
    m.additive = mask.const_data_ptr<float>() + offset;
  return m;
}

Tensor broadcast_mask(const std::optional<Tensor>& mask, int64_t B, int64_t H, int64_t Lq, int64_t Lk) {
  if (!mask.has_value() || !mask->defined()) return Tensor();
  const Tensor m = mask->scalar_type() == at::kBool ? *mask : mask->to(at::kFloat);
  return m.expand({B, H, Lq, Lk});
}

Rows rows(const Tensor& t, int64_t b, int64_t h) {
  return Rows{t.const_data_ptr<float>() + b * t.stride(0) + h * t.stride(1), t.stride(2)};
}

std::tuple<Tensor, Tensor> r_flash(const Tensor& query, const Tensor& key, const Tensor& value, double dropout_p,
                                   bool is_causal, const std::optional<Tensor>& attn_mask,
                                   std::optional<double> scale) {
  const char* op = "aten::_scaled_dot_product_flash_attention_for_cpu";
  if (!attention_ours(op, query, key, value, dropout_p))
    return at::cpu::_scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout_p, is_causal, attn_mask,
                                                                scale);
  if (is_reduced(query.scalar_type())) {
    auto [out, lse] = r_flash(up(query), up(key), up(value), dropout_p, is_causal, attn_mask, scale);
    return {out.to(query.scalar_type()), lse};
  }
  const Tensor q = last_dim_contiguous(query), k = last_dim_contiguous(key), v = last_dim_contiguous(value);
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), E = q.size(3), Lk = k.size(2), Ev = v.size(3);
  const Tensor mask = broadcast_mask(attn_mask, B, H, Lq, Lk);
  const float s = attention_scale(q, scale);
  Tensor out = at::empty({B, Lq, H, Ev}, q.options()).transpose(1, 2);  // torch's flash layout
  Tensor lse = at::empty({B, H, Lq}, q.options());
  float *po = out.data_ptr<float>(), *pl = lse.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t++) {
      const int64_t b = t / H, h = t % H;
      attention_forward(Lq, Lk, E, Ev, rows(q, b, h), rows(k, b, h), rows(v, b, h), s, is_causal,
                        head_mask(mask, b, h), &attention_vmath, settings.allow_avx512,
                        po + b * out.stride(0) + h * out.stride(1), out.stride(2), pl + (b * H + h) * Lq);
    }
  });
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor> r_flash_backward(const Tensor& grad_out, const Tensor& query, const Tensor& key,
                                                    const Tensor& value, const Tensor& out, const Tensor& logsumexp,
                                                    double dropout_p, bool is_causal,
                                                    const std::optional<Tensor>& attn_mask,
                                                    std::optional<double> scale) {
  const char* op = "aten::_scaled_dot_product_flash_attention_for_cpu_backward";
  if (!attention_ours(op, query, key, value, dropout_p) || grad_out.scalar_type() != query.scalar_type())
    return at::cpu::_scaled_dot_product_flash_attention_for_cpu_backward(grad_out, query, key, value, out, logsumexp,
                                                                         dropout_p, is_causal, attn_mask, scale);
  if (is_reduced(query.scalar_type())) {
    auto [gq, gk, gv] = r_flash_backward(up(grad_out), up(query), up(key), up(value), up(out), logsumexp, dropout_p,
                                         is_causal, attn_mask, scale);
    const auto t = query.scalar_type();
    return {gq.to(t), gk.to(t), gv.to(t)};
  }
  const Tensor q = last_dim_contiguous(query), k = last_dim_contiguous(key), v = last_dim_contiguous(value);
  const Tensor o = last_dim_contiguous(out), dout = last_dim_contiguous(grad_out);
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), E = q.size(3), Lk = k.size(2), Ev = v.size(3);
  const Tensor mask = broadcast_mask(attn_mask, B, H, Lq, Lk);
  const float s = attention_scale(q, scale);
  Tensor gq = at::empty({B, H, Lq, E}, q.options()), gk = at::empty({B, H, Lk, E}, q.options());
  Tensor gv = at::empty({B, H, Lk, Ev}, q.options());
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t++) {
      const int64_t b = t / H, h = t % H;
      attention_backward(Lq, Lk, E, Ev, rows(q, b, h), rows(k, b, h), rows(v, b, h), rows(o, b, h),
                         rows(dout, b, h), s, is_causal, head_mask(mask, b, h), &attention_vmath,
                         settings.allow_avx512, gq.data_ptr<float>() + (b * H + h) * Lq * E, E,
                         gk.data_ptr<float>() + (b * H + h) * Lk * E, E,
                         gv.data_ptr<float>() + (b * H + h) * Lk * Ev, Ev);
    }
  });
  return {gq, gk, gv};
}

// ---- what Python asks of the library ----

void configure(bool allow_avx512, bool refuse) {
  settings.allow_avx512 = allow_avx512;
  settings.refuse = refuse;
}

std::vector<std::string> unportable_seen() {
  std::lock_guard<std::mutex> lock(seen_mutex);
  return {seen.begin(), seen.end()};
}

std::string gemm_isa() { return tiling(settings.allow_avx512).isa; }

// The compiler that built this library, for the lock's toolchain (kernels.cxx).
std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

}  // namespace
}  // namespace repro_portable

TORCH_LIBRARY(repro_portable, m) {
  m.def("configure(bool allow_avx512, bool refuse) -> ()", &repro_portable::configure);
  m.def("unportable_seen() -> str[]", &repro_portable::unportable_seen);
  m.def("gemm_isa() -> str", &repro_portable::gemm_isa);
  m.def("compiler() -> str", &repro_portable::compiler);
  m.def("compare_widths(str name, int lo, int hi) -> int", &repro_portable::compare_widths_named);
}

TORCH_LIBRARY_IMPL(aten, CPU, m) {
  using namespace repro_portable;
  m.impl("mm", &r_mm);
  m.impl("mm.out", &r_mm_out);
  m.impl("addmm", &r_addmm);
  m.impl("addmm.out", &r_addmm_out);
  m.impl("addmm_", &r_addmm_);
  m.impl("bmm", &r_bmm);
  m.impl("bmm.out", &r_bmm_out);
  m.impl("baddbmm", &r_baddbmm);
  m.impl("baddbmm.out", &r_baddbmm_out);
  m.impl("baddbmm_", &r_baddbmm_);
  m.impl("addmv", &r_addmv);
  m.impl("addmv.out", &r_addmv_out);
  m.impl("addmv_", &r_addmv_);
  m.impl("dot", &r_dot);
  m.impl("vdot", &r_vdot);
  m.impl("convolution", &r_convolution);
  m.impl("convolution_backward", &r_convolution_backward);
  m.impl("bernoulli_.float", &r_bernoulli_);
  m.impl("_scaled_dot_product_flash_attention_for_cpu", &r_flash);
  m.impl("_scaled_dot_product_flash_attention_for_cpu_backward", &r_flash_backward);
#define REPRO_REGISTER(op)                 \
  m.impl(#op, &op##_fn);                   \
  m.impl(#op ".out", &op##_out_fn);        \
  m.impl(#op "_", &op##_inplace_fn);
  REPRO_UNARY_OPS(REPRO_REGISTER)
}
