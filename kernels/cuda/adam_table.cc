// MakeAdamTable: the checked chunk table of the device AdamW (Note [AdamW chunks]).
#include "kernels/cuda/adam_table.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/launch_geometry.h"

namespace kiln::kernels::cuda {

absl::StatusOr<AdamTable> MakeAdamTable(const std::vector<DeviceSegment>& segments, int64_t span,
                                        int64_t chunk_elements) {
  if (chunk_elements <= 0 || chunk_elements > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("AdamW chunk of ", chunk_elements, " elements"));
  }
  AdamTable table;
  for (const DeviceSegment& s : segments) {
    if (s.offset < 0 || s.length < 0 || s.offset + s.length > span) {
      return absl::InvalidArgumentError(absl::StrCat("optimizer segment [", s.offset, ", ",
                                                     s.offset + s.length, ") lies outside [0, ",
                                                     span, ")"));
    }
    if (!s.has_grad) continue;
    for (int64_t start = 0; start < s.length; start += chunk_elements) {
      if (static_cast<int64_t>(table.chunks.size()) == kMaxGridX) {
        return absl::UnimplementedError(absl::StrCat("the CUDA AdamW updates at most ", kMaxGridX,
                                                     " chunks of ", chunk_elements,
                                                     " elements in one launch"));
      }
      AdamChunk c;
      c.offset = s.offset + start;
      c.length = static_cast<int32_t>(std::min(chunk_elements, s.length - start));
      c.weight_decay = s.weight_decay ? 1 : 0;
      table.chunks.push_back(c);
      table.num_elements += c.length;
    }
  }
  return table;
}

}  // namespace kiln::kernels::cuda
