// A small command-line parser for the `kiln` CLI: flags (--name value, --name=value, short
// aliases like -f) anywhere on the line, booleans, and positional arguments. Unknown flags are
// errors naming the flag.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::cli {

struct FlagSpec {
  std::string name;   // "file"
  std::string alias;  // "f" (may be empty)
  bool takes_value = false;
};

class Args {
 public:
  // Parses argv[first..] against `specs`.
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::vector<FlagSpec>& specs);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  // All values of a repeatable flag.
  std::vector<std::string> GetAll(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::multimap<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace kiln::cli
