// Bearer tokens: the operator's user token (from --auth-token-file) for JobService, and per-job
// worker tokens minted at each launch for ClusterService. Comparison is constant-time.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ServerContextBase;
}

namespace kiln::scheduler {

// Reads a token file: the first line, trimmed. Refuses an empty token and a file that other users
// may read or write.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// The token of an `authorization: Bearer <token>` header, or "" when absent or malformed.
std::string BearerToken(const grpc::ServerContextBase& context);

// Constant-time equality (the length is not secret).
bool TokensEqual(const std::string& a, const std::string& b);

// 32 random bytes, hex-encoded.
std::string MintToken();

}  // namespace kiln::scheduler
