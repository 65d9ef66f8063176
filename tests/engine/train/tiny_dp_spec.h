// The small data-parallel training job the data-parallel tests compare across world sizes, ZeRO
// stages and devices: a 2-layer GPT-2 or Llama (d_model 32, vocab 61, T 12) trained with AdamW,
// clipping and a cosine schedule, with tiny gradient buckets so that even this model has several.
#pragma once

#include <string>

#include "kiln/v1/job.pb.h"

namespace kiln::testing {

inline kiln::v1::JobSpec TinyDataParallelSpec(const std::string& family, const std::string& data,
                                              int micro_batch, int world, int stage,
                                              const std::string& precision, int steps) {
  kiln::v1::JobSpec s;
  s.set_name("dp");
  auto* m = s.mutable_model();
  m->set_family(family);
  m->set_n_layer(2);
  m->set_n_head(4);
  m->set_n_kv_head(family == "llama" ? 2 : 4);
  m->set_d_model(32);
  m->set_d_ff(family == "llama" ? 48 : 128);
  m->set_vocab_size(61);
  m->set_max_seq_len(16);
  s.mutable_data()->set_train(data);
  s.mutable_data()->set_seq_len(12);
  auto* t = s.mutable_train();
  t->set_steps(steps);
  t->set_micro_batch(micro_batch);
  t->set_precision(precision);
  t->set_grad_clip(0.5);
  t->mutable_optimizer()->set_lr(5e-3);
  t->mutable_optimizer()->set_weight_decay(0.1);
  // Note [Key bias noise]: GPT-2's key bias gets a gradient that is zero in exact arithmetic
  // (softmax ignores a constant added to every score of a query), so what reaches it is rounding
  // noise near 1e-9, different for every summation order. With eps = 1e-8 AdamW turns that noise
  // into steps of size lr; eps = 1e-6 keeps noise-driven steps below 1e-5 of lr, so the comparison
  // measures the data-parallel arithmetic rather than amplified rounding.
  t->mutable_optimizer()->set_eps(1e-6);
  t->mutable_lr_schedule()->set_name("cosine");
  t->mutable_lr_schedule()->set_warmup_steps(2);
  s.mutable_parallel()->set_dp(world);
  s.mutable_parallel()->set_zero_stage(stage);
  s.mutable_parallel()->set_bucket_mb(0.004);  // several buckets even for a tiny model
  return s;
}

}  // namespace kiln::testing
