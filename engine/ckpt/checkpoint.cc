// Atomic checkpoint commit, pruning and resolution.
#include "engine/ckpt/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/ckpt/safetensors.h"

namespace kiln::ckpt {

namespace fs = std::filesystem;

std::string CheckpointDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }

namespace {

absl::Status FsyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", path, " to fsync"));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return absl::ResourceExhaustedError(absl::StrCat("fsync of ", path, " failed"));
  return absl::OkStatus();
}

std::vector<std::string> CommittedCheckpoints(const std::string& run_dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && absl::StartsWith(name, "step-") &&
        fs::exists(e.path() / "state.json")) {
      names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

std::string CheckpointTempDir(const std::string& run_dir, int64_t step) {
  return (fs::path(run_dir) / (".tmp-" + CheckpointDirName(step))).string();
}

absl::StatusOr<std::string> BeginCheckpoint(const std::string& run_dir, int64_t step) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create checkpoint directory ", run_dir,
                                                    ": ", ec.message()));
  }
  // Leftovers of an interrupted save are never read; clear them.
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    if (absl::StartsWith(e.path().filename().string(), ".tmp-")) fs::remove_all(e.path(), ec);
  }
  const std::string tmp = CheckpointTempDir(run_dir, step);
  fs::create_directories(tmp, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  return tmp;
}

absl::StatusOr<std::string> FinishCheckpoint(const std::string& run_dir, int64_t step,
                                             const std::string& state_json, int keep) {
  const std::string name = CheckpointDirName(step);
  const std::string tmp = CheckpointTempDir(run_dir, step);
  const std::string final_dir = (fs::path(run_dir) / name).string();
  std::error_code ec;
  auto fail = [&](const absl::Status& s) {
    fs::remove_all(tmp, ec);
    return absl::Status(s.code(), absl::StrCat("writing checkpoint ", final_dir, ": ", s.message()));
  };
  absl::Status s = WriteFileAtomically((fs::path(tmp) / "state.json").string(), state_json);
  if (!s.ok()) return fail(s);
  s = FsyncPath(tmp);
  if (!s.ok()) return fail(s);
  if (fs::exists(final_dir)) fs::remove_all(final_dir, ec);  // a re-run of the same step
  fs::rename(tmp, final_dir, ec);
  if (ec) return fail(absl::InternalError(absl::StrCat("rename failed: ", ec.message())));
  KILN_RETURN_IF_ERROR(FsyncPath(run_dir));
  KILN_RETURN_IF_ERROR(WriteFileAtomically((fs::path(run_dir) / "latest").string(), name + "\n"));
  if (keep > 0) {
    std::vector<std::string> all = CommittedCheckpoints(run_dir);
    for (size_t i = 0; i + keep < all.size(); ++i) {
      if (all[i] != name) fs::remove_all(fs::path(run_dir) / all[i], ec);
    }
  }
  return final_dir;
}

absl::StatusOr<std::string> CommitCheckpoint(const std::string& run_dir, int64_t step,
                                             const CheckpointFiles& files, int keep) {
  KILN_ASSIGN_OR_RETURN(const std::string tmp, BeginCheckpoint(run_dir, step));
  for (const auto& [file, tensors] : files.safetensors) {
    const absl::Status s = WriteSafetensors((fs::path(tmp) / file).string(), tensors);
    if (!s.ok()) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
      return absl::Status(s.code(), absl::StrCat("writing checkpoint ",
                                                 (fs::path(run_dir) / CheckpointDirName(step)).string(),
                                                 ": ", s.message()));
    }
  }
  return FinishCheckpoint(run_dir, step, files.state_json, keep);
}

absl::StatusOr<std::string> ResolveCheckpoint(const std::string& path) {
  const fs::path p(path);
  if (fs::exists(p / "state.json")) return p.string();
  if (!fs::is_directory(p)) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", path, " does not exist"));
  }
  std::ifstream latest(p / "latest");
  std::string name;
  if (latest && std::getline(latest, name) && fs::exists(p / name / "state.json")) {
    return (p / name).string();
  }
  // No pointer (or a stale one): the newest complete checkpoint.
  const std::vector<std::string> all = CommittedCheckpoints(path);
  if (all.empty()) {
    return absl::NotFoundError(absl::StrCat("no complete checkpoint under ", path));
  }
  return (p / all.back()).string();
}

absl::StatusOr<std::string> ReadCheckpointState(const std::string& checkpoint_dir) {
  std::ifstream in(fs::path(checkpoint_dir) / "state.json");
  if (!in) {
    return absl::NotFoundError(absl::StrCat(checkpoint_dir, " has no state.json (incomplete?)"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace kiln::ckpt
