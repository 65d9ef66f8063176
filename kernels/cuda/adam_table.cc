// MakeAdamTable: the checked segment table of the device AdamW (Note [Device AdamW state layout]).
#include "kernels/cuda/adam_table.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/launch_geometry.h"

namespace kiln::kernels::cuda {

absl::StatusOr<AdamTable> MakeAdamTable(const std::vector<DeviceSegment>& segments, int64_t span) {
  AdamTable table;
  for (const DeviceSegment& s : segments) {
    if (s.offset < 0 || s.length < 0 || s.offset + s.length > span) {
      return absl::InvalidArgumentError(absl::StrCat("optimizer segment [", s.offset, ", ",
                                                     s.offset + s.length, ") lies outside [0, ",
                                                     span, ")"));
    }
    if (!s.has_grad || s.length == 0) continue;
    AdamSegment a;
    a.offset = s.offset;
    a.length = s.length;
    a.weight_decay = s.weight_decay ? 1 : 0;
    table.segments.push_back(a);
    table.max_length = std::max(table.max_length, s.length);
  }
  if (static_cast<int64_t>(table.segments.size()) > kMaxGridYZ) {
    return absl::UnimplementedError(absl::StrCat("the CUDA AdamW updates at most ", kMaxGridYZ,
                                                 " parameter segments in one launch, got ",
                                                 table.segments.size()));
  }
  return table;
}

}  // namespace kiln::kernels::cuda
