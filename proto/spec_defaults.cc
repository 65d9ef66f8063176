// Fills every `optional` JobSpec field that is unset with the default its job.proto comment
// documents. Family-dependent defaults (gpt2 d_ff = 4 * d_model, tied embeddings) follow the
// family.
#include "proto/spec_defaults.h"

namespace kiln::spec {

void ApplyDefaults(kiln::v1::JobSpec* spec) {
  kiln::v1::ModelSpec* m = spec->mutable_model();
  const bool attention = m->family() == "gpt2" || m->family() == "llama";
  if (attention && !m->has_n_kv_head() && m->n_head() > 0) m->set_n_kv_head(m->n_head());
  if (m->family() == "gpt2" && !m->has_d_ff() && m->d_model() > 0) m->set_d_ff(4 * m->d_model());
  if (!m->has_norm_eps()) m->set_norm_eps(1e-5);
  if (!m->has_rope_theta()) m->set_rope_theta(10000);
  if (!m->has_tie_embeddings()) m->set_tie_embeddings(m->family() == "gpt2");
  if (!m->has_dropout()) m->set_dropout(0);

  kiln::v1::DataSpec* d = spec->mutable_data();
  if (!d->has_seq_len() && m->max_seq_len() > 0) d->set_seq_len(m->max_seq_len());

  kiln::v1::TrainSpec* t = spec->mutable_train();
  if (!t->has_grad_accum()) t->set_grad_accum(1);
  kiln::v1::OptimizerSpec* o = t->mutable_optimizer();
  if (!o->has_name()) o->set_name("adamw");
  if (!o->has_lr()) o->set_lr(3e-4);
  if (!o->has_beta1()) o->set_beta1(0.9);
  if (!o->has_beta2()) o->set_beta2(0.999);
  if (!o->has_eps()) o->set_eps(1e-8);
  if (!o->has_weight_decay()) o->set_weight_decay(0.0);
  if (!o->has_momentum()) o->set_momentum(0.0);
  if (!t->mutable_lr_schedule()->has_name()) t->mutable_lr_schedule()->set_name("constant");
  if (!t->has_precision()) t->set_precision("fp32");
  if (!t->has_seed()) t->set_seed(1234);
  if (!t->has_eval_steps()) t->set_eval_steps(10);
  if (!t->has_log_every()) t->set_log_every(1);
  if (!t->has_recompute()) t->set_recompute(0);

  if (!spec->mutable_checkpoint()->has_keep()) spec->mutable_checkpoint()->set_keep(3);

  kiln::v1::ResourcesSpec* r = spec->mutable_resources();
  if (!r->has_workers()) r->set_workers(1);
  if (!r->has_device()) r->set_device("cpu");
  // threads_per_worker stays unset: kilnd gives each worker its slots' share of the CPU cores.

  kiln::v1::ParallelSpec* p = spec->mutable_parallel();
  if (!p->has_pp()) p->set_pp(1);
  if (!p->has_tp()) p->set_tp(1);
  // dp defaults to resources.workers (job.proto); with pipeline or tensor parallelism that would
  // contradict dp * pp * tp == workers, so the default is the share left to data parallelism.
  const int model_parallel = p->pp() * p->tp();
  if (!p->has_dp()) {
    p->set_dp(model_parallel > 0 && r->workers() % model_parallel == 0
                  ? r->workers() / model_parallel
                  : r->workers());
  }
  if (!p->has_bucket_mb()) p->set_bucket_mb(25);

  kiln::v1::FaultSpec* f = spec->mutable_fault();
  if (!f->has_max_restarts()) f->set_max_restarts(3);
  if (!f->has_heartbeat_timeout_s()) f->set_heartbeat_timeout_s(60);
  if (!f->has_hang_timeout_s()) f->set_hang_timeout_s(600);
  if (!f->has_restart_backoff_s()) f->set_restart_backoff_s(1);
}

}  // namespace kiln::spec
