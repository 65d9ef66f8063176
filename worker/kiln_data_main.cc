// kiln-data: prepares token files for training.
//
//   kiln-data prepare --tokenizer byte INPUT.txt... --out DIR [--val-fraction F]
//
// Writes DIR/train.bin and DIR/val.bin in llm.c's format. The byte tokenizer maps every byte to
// its value (vocab 256); the last F of the text (default 0.1) becomes validation data.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/data/token_file.h"

namespace {

constexpr const char* kUsage =
    "usage: kiln-data prepare --tokenizer byte INPUT.txt... --out DIR [--val-fraction F]\n";

int Usage(const std::string& why) {
  std::fprintf(stderr, "kiln-data: %s\n%s", why.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "prepare") return Usage("expected the verb \"prepare\"");
  std::string tokenizer, out_dir;
  double val_fraction = 0.1;
  std::vector<std::string> inputs;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc) {
      tokenizer = argv[++i];
    } else if (a == "--out" && i + 1 < argc) {
      out_dir = argv[++i];
    } else if (a == "--val-fraction" && i + 1 < argc) {
      if (!absl::SimpleAtod(argv[++i], &val_fraction) || val_fraction < 0 || val_fraction >= 1) {
        return Usage("--val-fraction must be in [0, 1)");
      }
    } else if (!a.empty() && a[0] == '-') {
      return Usage("unknown flag " + a);
    } else {
      inputs.push_back(a);
    }
  }
  if (tokenizer != "byte") return Usage("--tokenizer: only \"byte\" is available");
  if (out_dir.empty()) return Usage("--out DIR is required");
  if (inputs.empty()) return Usage("no input files");
  std::vector<uint32_t> tokens;
  for (const std::string& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "kiln-data: cannot read %s\n", path.c_str());
      return 2;
    }
    std::stringstream text;
    text << in.rdbuf();
    for (unsigned char c : text.str()) tokens.push_back(c);
  }
  const size_t val = static_cast<size_t>(tokens.size() * val_fraction);
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  const std::vector<uint32_t> train(tokens.begin(), tokens.end() - val);
  const std::vector<uint32_t> valid(tokens.end() - val, tokens.end());
  for (const auto& [name, part] : {std::make_pair(std::string("train.bin"), &train),
                                   std::make_pair(std::string("val.bin"), &valid)}) {
    if (part->empty()) continue;
    const std::string path = (std::filesystem::path(out_dir) / name).string();
    const absl::Status s = kiln::data::WriteTokenFile(path, *part);
    if (!s.ok()) {
      std::fprintf(stderr, "kiln-data: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    std::printf("wrote %s: %zu tokens\n", path.c_str(), part->size());
  }
  return 0;
}
