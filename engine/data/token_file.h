// A memory-mapped token file: llm.c's format (a 256 x int32 header — magic 20240520, version 1 for
// uint16 tokens or 2 for uint32, token count — then the tokens) or raw little-endian uint16 without
// a header. Opening checks the header, the size and every token against the vocabulary.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace kiln::data {

constexpr int32_t kLlmcMagic = 20240520;
constexpr int kLlmcHeaderInts = 256;

class TokenFile {
 public:
  // `vocab_size` > 0 checks every token (the error names the file and the token's offset).
  static absl::StatusOr<std::unique_ptr<TokenFile>> Open(const std::string& path, int vocab_size);
  ~TokenFile();

  int64_t size() const { return num_tokens_; }
  uint32_t operator[](int64_t i) const {
    return wide_ ? static_cast<const uint32_t*>(tokens_)[i]
                 : static_cast<const uint16_t*>(tokens_)[i];
  }
  // Copies tokens [begin, begin + n) into out as int32.
  void Read(int64_t begin, int64_t n, int32_t* out) const;
  const std::string& path() const { return path_; }

 private:
  TokenFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const void* tokens_ = nullptr;
  int64_t num_tokens_ = 0;
  bool wide_ = false;  // uint32 tokens
};

// Writes tokens in llm.c's format (uint16 when every token fits, else uint32), atomically.
absl::Status WriteTokenFile(const std::string& path, const std::vector<uint32_t>& tokens);

}  // namespace kiln::data
