// The YAML walker behind LoadSpecYaml: for each mapping key it looks the field up in the message
// descriptor and converts the scalar to the field's type itself (yaml-cpp's as<T> is too lenient:
// it reads "1.5" as int 1 and "yes" as true), collecting issues with their paths and locations.
#include "proto/spec_loader.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "proto/spec_defaults.h"
#include "proto/spec_validate.h"

namespace kiln::spec {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

SourceMark ToMark(const YAML::Mark& mark) { return {mark.line + 1, mark.column + 1}; }

std::string Quote(const std::string& s) {
  constexpr size_t kShown = 40;
  if (s.size() <= kShown) return absl::StrCat("\"", s, "\"");
  return absl::StrCat("\"", s.substr(0, kShown), "...\" (", s.size(), " bytes)");
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      return Quote(node.Scalar());
    default:
      return "nothing";
  }
}

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? key : absl::StrCat(path, ".", key);
}

// Collects issues and marks while walking one document.
class Walker {
 public:
  explicit Walker(SourceMap* marks) : marks_(marks) {}

  std::vector<SpecIssue>& issues() { return issues_; }

  void WalkMessage(const YAML::Node& node, const std::string& path,
                   google::protobuf::Message* msg) {
    if (!node.IsMap()) {
      Add(path, absl::StrCat(path.empty() ? "expected a mapping at the top level, got "
                                          : "expected a mapping, got ",
                             Describe(node)));
      return;
    }
    const Descriptor* desc = msg->GetDescriptor();
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node& key_node = it->first;
      if (!key_node.IsScalar()) {
        Mark(path, key_node);
        Add(path, absl::StrCat("keys must be plain names, got ", Describe(key_node)));
        continue;
      }
      const std::string key = key_node.Scalar();
      const std::string field_path = Join(path, key.size() > 64 ? key.substr(0, 64) : key);
      Mark(field_path, key_node);
      if (key.size() > kMaxKeyBytes) {
        Add(field_path, absl::StrCat("key is ", key.size(), " bytes; the limit is ", kMaxKeyBytes));
        continue;
      }
      if (!seen.insert(key).second) {
        Add(field_path, "duplicate key");
        continue;
      }
      const FieldDescriptor* field = desc->FindFieldByName(key);
      if (field == nullptr) {
        Add(field_path, UnknownField(desc, key));
        continue;
      }
      const YAML::Node& value = it->second;
      if (value.IsNull()) continue;  // `key:` or `key: null` leaves the field at its default
      // Scalars are located at their value; sections at their key, which reads better when an
      // issue is about a field missing inside them.
      if (value.IsScalar()) Mark(field_path, value);
      Field(value, field_path, msg, field);
    }
  }

 private:
  void Add(const std::string& path, std::string message) {
    issues_.push_back({path, std::move(message)});
  }
  void Mark(const std::string& path, const YAML::Node& node) {
    if (marks_ != nullptr) (*marks_)[path] = ToMark(node.Mark());
  }

  static std::string UnknownField(const Descriptor* desc, const std::string& key) {
    std::string best;
    int best_distance = std::numeric_limits<int>::max();
    std::vector<std::string> names;
    for (int i = 0; i < desc->field_count(); ++i) {
      const std::string& name = desc->field(i)->name();
      names.push_back(name);
      const int d = EditDistance(key, name);
      if (d < best_distance) {
        best_distance = d;
        best = name;
      }
    }
    const int allowed = std::max<int>(2, static_cast<int>(key.size()) / 3);
    if (!best.empty() && best_distance <= allowed) {
      return absl::StrCat("unknown field; did you mean \"", best, "\"?");
    }
    return absl::StrCat("unknown field; expected one of ", absl::StrJoin(names, ", "));
  }

  void Field(const YAML::Node& value, const std::string& path, google::protobuf::Message* msg,
             const FieldDescriptor* field) {
    const Reflection* refl = msg->GetReflection();
    if (field->is_map()) {
      MapField(value, path, msg, field);
    } else if (field->is_repeated()) {
      if (!value.IsSequence()) {
        Add(path, absl::StrCat("expected a list, got ", Describe(value)));
        return;
      }
      for (size_t i = 0; i < value.size(); ++i) {
        const std::string item_path = absl::StrCat(path, "[", i, "]");
        Mark(item_path, value[i]);
        if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          WalkMessage(value[i], item_path, refl->AddMessage(msg, field));
        } else {
          Scalar(value[i], item_path, msg, field, /*repeated=*/true);
        }
      }
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      WalkMessage(value, path, refl->MutableMessage(msg, field));
    } else {
      Scalar(value, path, msg, field, /*repeated=*/false);
    }
  }

  // map<string, string> (labels): a mapping of scalars.
  void MapField(const YAML::Node& value, const std::string& path, google::protobuf::Message* msg,
                const FieldDescriptor* field) {
    if (!value.IsMap()) {
      Add(path, absl::StrCat("expected a mapping, got ", Describe(value)));
      return;
    }
    const Descriptor* entry_desc = field->message_type();
    const FieldDescriptor* key_field = entry_desc->map_key();
    const FieldDescriptor* value_field = entry_desc->map_value();
    std::set<std::string> seen;
    for (auto it = value.begin(); it != value.end(); ++it) {
      const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      const std::string entry_path = absl::StrCat(path, "[", Quote(key), "]");
      Mark(entry_path, it->first);
      if (!it->first.IsScalar()) {
        Add(path, absl::StrCat("keys must be strings, got ", Describe(it->first)));
        continue;
      }
      if (!seen.insert(key).second) {
        Add(entry_path, "duplicate key");
        continue;
      }
      google::protobuf::Message* entry = msg->GetReflection()->AddMessage(msg, field);
      ScalarInto(it->first, entry_path, entry, key_field);
      if (it->second.IsNull()) {
        Add(entry_path, "needs a value");
        continue;
      }
      ScalarInto(it->second, entry_path, entry, value_field);
    }
  }

  void ScalarInto(const YAML::Node& node, const std::string& path, google::protobuf::Message* msg,
                  const FieldDescriptor* field) {
    Scalar(node, path, msg, field, /*repeated=*/false);
  }

  void Scalar(const YAML::Node& node, const std::string& path, google::protobuf::Message* msg,
              const FieldDescriptor* field, bool repeated);

  SourceMap* marks_;
  std::vector<SpecIssue> issues_;
};

bool IsIntegerText(const std::string& s, bool allow_sign) {
  size_t i = 0;
  if (allow_sign && !s.empty() && (s[0] == '-' || s[0] == '+')) i = 1;
  if (i == s.size()) return false;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return true;
}

// Parses a decimal integer into [lo, hi]; returns an error message or "".
template <typename T>
std::string ParseInteger(const std::string& text, T lo, T hi, T* out) {
  const bool is_signed = std::numeric_limits<T>::is_signed;
  if (!IsIntegerText(text, is_signed)) {
    if (!is_signed && IsIntegerText(text, true)) {
      return absl::StrCat("must not be negative, got ", Quote(text));
    }
    return absl::StrCat("expected an integer, got ", Quote(text));
  }
  const char* begin = text.data() + (text[0] == '+' ? 1 : 0);
  const auto [ptr, ec] = std::from_chars(begin, text.data() + text.size(), *out);
  if (ec == std::errc::result_out_of_range || *out < lo || *out > hi) {
    return absl::StrCat(text, " is out of range [", lo, ", ", hi, "]");
  }
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return absl::StrCat("expected an integer, got ", Quote(text));
  }
  return "";
}

std::string ParseDouble(const std::string& text, double* out) {
  const std::string lower = [&] {
    std::string s = text;
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }();
  if (lower == ".inf" || lower == "+.inf" || lower == "-.inf" || lower == ".nan" ||
      lower == "inf" || lower == "nan") {
    return absl::StrCat("must be a finite number, got ", Quote(text));
  }
  const bool plain =
      !text.empty() && text.find_first_not_of("0123456789+-.eE") == std::string::npos;
  char* end = nullptr;
  errno = 0;
  const double v = plain ? std::strtod(text.c_str(), &end) : 0;
  if (!plain || end != text.c_str() + text.size()) {
    return absl::StrCat("expected a number, got ", Quote(text));
  }
  if (errno == ERANGE || !std::isfinite(v)) {
    return absl::StrCat(text, " is out of range for a double");
  }
  *out = v;
  return "";
}

void Walker::Scalar(const YAML::Node& node, const std::string& path, google::protobuf::Message* msg,
                    const FieldDescriptor* field, bool repeated) {
  const char* expected = "a scalar";
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL:
      expected = "true or false";
      break;
    case FieldDescriptor::CPPTYPE_STRING:
      expected = "a string";
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT:
      expected = "a number";
      break;
    default:
      expected = "an integer";
      break;
  }
  if (!node.IsScalar()) {
    Add(path, absl::StrCat("expected ", expected, ", got ", Describe(node)));
    return;
  }
  const std::string& text = node.Scalar();
  if (text.size() > kMaxStringBytes) {
    Add(path, absl::StrCat("value is ", text.size(), " bytes; the limit is ", kMaxStringBytes));
    return;
  }
  // A quoted scalar ("12") is a string in YAML: refuse it where a number or bool is expected.
  const bool quoted = node.Tag() == "!";
  if (quoted && field->cpp_type() != FieldDescriptor::CPPTYPE_STRING &&
      field->cpp_type() != FieldDescriptor::CPPTYPE_ENUM) {
    Add(path, absl::StrCat("expected ", expected, ", got the string ", Quote(text)));
    return;
  }
  const Reflection* refl = msg->GetReflection();
  std::string error;
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v = 0;
      error = ParseInteger<int32_t>(text, std::numeric_limits<int32_t>::min(),
                                    std::numeric_limits<int32_t>::max(), &v);
      if (error.empty()) repeated ? refl->AddInt32(msg, field, v) : refl->SetInt32(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v = 0;
      error = ParseInteger<int64_t>(text, std::numeric_limits<int64_t>::min(),
                                    std::numeric_limits<int64_t>::max(), &v);
      if (error.empty()) repeated ? refl->AddInt64(msg, field, v) : refl->SetInt64(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v = 0;
      error = ParseInteger<uint32_t>(text, 0, std::numeric_limits<uint32_t>::max(), &v);
      if (error.empty()) repeated ? refl->AddUInt32(msg, field, v) : refl->SetUInt32(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v = 0;
      error = ParseInteger<uint64_t>(text, 0, std::numeric_limits<uint64_t>::max(), &v);
      if (error.empty()) repeated ? refl->AddUInt64(msg, field, v) : refl->SetUInt64(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double v = 0;
      error = ParseDouble(text, &v);
      if (!error.empty()) break;
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT) {
        repeated ? refl->AddFloat(msg, field, static_cast<float>(v))
                 : refl->SetFloat(msg, field, static_cast<float>(v));
      } else {
        repeated ? refl->AddDouble(msg, field, v) : refl->SetDouble(msg, field, v);
      }
      break;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      bool v = false;
      if (text == "true" || text == "True" || text == "TRUE") {
        v = true;
      } else if (!(text == "false" || text == "False" || text == "FALSE")) {
        error = absl::StrCat("expected true or false, got ", Quote(text));
        break;
      }
      repeated ? refl->AddBool(msg, field, v) : refl->SetBool(msg, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING:
      repeated ? refl->AddString(msg, field, text) : refl->SetString(msg, field, text);
      break;
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* value = field->enum_type()->FindValueByName(text);
      if (value == nullptr) {
        std::vector<std::string> names;
        for (int i = 0; i < field->enum_type()->value_count(); ++i) {
          names.push_back(field->enum_type()->value(i)->name());
        }
        error = absl::StrCat(Quote(text), " is not one of ", absl::StrJoin(names, ", "));
        break;
      }
      repeated ? refl->AddEnum(msg, field, value) : refl->SetEnum(msg, field, value);
      break;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      error = absl::StrCat("expected a mapping, got ", Quote(text));
      break;
  }
  if (!error.empty()) Add(path, std::move(error));
}

void ResolveOne(const std::string& base_dir, const std::string& path, std::string* value,
                std::vector<SpecIssue>* issues) {
  if (value->empty() || std::filesystem::path(*value).is_absolute()) return;
  if (base_dir.empty() || !std::filesystem::path(base_dir).is_absolute()) {
    issues->push_back({path, absl::StrCat("relative path ", Quote(*value),
                                          " needs a base directory; use an absolute path")});
    return;
  }
  *value = (std::filesystem::path(base_dir) / *value).lexically_normal().string();
}

}  // namespace

void ResolvePaths(const std::string& base_dir, kiln::v1::JobSpec* spec,
                  std::vector<SpecIssue>* issues) {
  ResolveOne(base_dir, "data.train", spec->mutable_data()->mutable_train(), issues);
  ResolveOne(base_dir, "data.val", spec->mutable_data()->mutable_val(), issues);
  ResolveOne(base_dir, "model.init_from", spec->mutable_model()->mutable_init_from(), issues);
  ResolveOne(base_dir, "checkpoint.dir", spec->mutable_checkpoint()->mutable_dir(), issues);
}

absl::Status ParseSpecYaml(const std::string& text, const LoadOptions& options,
                           kiln::v1::JobSpec* out, SourceMap* marks) {
  out->Clear();
  const std::string source = options.source_name.empty() ? "spec" : options.source_name;
  if (text.size() > kMaxSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": spec is ", text.size(), " bytes; the limit is ", kMaxSpecBytes));
  }
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": invalid YAML: ", e.msg));
  }
  if (docs.empty() || docs[0].IsNull()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": the spec is empty"));
  }
  if (docs.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected one YAML document, found ", docs.size()));
  }
  Walker walker(marks);
  try {
    walker.WalkMessage(docs[0], "", out);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": invalid YAML: ", e.msg));
  }
  return IssuesToStatus(walker.issues(), source, marks);
}

absl::StatusOr<kiln::v1::JobSpec> LoadSpecYaml(const std::string& text,
                                               const LoadOptions& options) {
  kiln::v1::JobSpec spec;
  SourceMap marks;
  if (absl::Status s = ParseSpecYaml(text, options, &spec, &marks); !s.ok()) return s;
  std::vector<SpecIssue> issues;
  ResolvePaths(options.base_dir, &spec, &issues);
  ApplyDefaults(&spec);
  for (SpecIssue& issue : ValidateSpec(spec)) issues.push_back(std::move(issue));
  const std::string source = options.source_name.empty() ? "spec" : options.source_name;
  if (absl::Status s = IssuesToStatus(issues, source, &marks); !s.ok()) return s;
  return spec;
}

absl::StatusOr<kiln::v1::JobSpec> LoadSpecFile(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  if (size > kMaxSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": spec is ", size, " bytes; the limit is ", kMaxSpecBytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  LoadOptions options;
  options.source_name = path;
  options.base_dir =
      std::filesystem::absolute(std::filesystem::path(path)).parent_path().lexically_normal();
  return LoadSpecYaml(buffer.str(), options);
}

}  // namespace kiln::spec
