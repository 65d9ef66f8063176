// Attributes of the normalizations; statistics are always f32, parameters (gamma, beta) f32.
//   layer_norm(x, gamma, beta) -> (y, mean, rstd): x (..., C) any float dtype; gamma, beta (C) f32;
//     y like x; mean, rstd f32 (rows) where rows = numel / C. rstd = 1/sqrt(var + eps), biased var.
//   layer_norm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta); dgamma/dbeta f32 (C).
//   rms_norm(x, gamma) -> (y, rstd): y = x * rstd * gamma, rstd = 1/sqrt(mean(x^2) + eps), computed
//     in f32 as Hugging Face LlamaRMSNorm (the normalized value is rounded to x's dtype before the
//     gamma multiply when x is not f32).
//   rms_norm_backward(dy, x, gamma, rstd) -> (dx, dgamma).
#pragma once

namespace kiln::ops {

struct NormAttrs {
  float eps = 1e-5f;
};

}  // namespace kiln::ops
