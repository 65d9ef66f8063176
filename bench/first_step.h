// Time from submit to the first training step of a tiny job through kilnd with the real
// kiln-worker, against kiln-train's own time to its first step on the same spec in the same run
// (process start, model build, one step: the part kilnd cannot save).
#pragma once

#include <string>

namespace kiln::bench {

struct FirstStepOptions {
  std::string kilnd;  // binaries
  std::string worker;
  std::string trainer;  // kiln-train
  std::string spec;     // a job spec file (configs/mlp-tiny.yaml)
  std::string dir;      // scratch
  int jobs = 7;         // per variant; medians are reported
};

// Markdown: a table for the spec with one worker and with two (data parallel), and notes.
std::string FirstStepSection(const FirstStepOptions& options);

}  // namespace kiln::bench
