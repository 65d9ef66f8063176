// The defaults of kiln.v1.JobSpec, as documented on each field of job.proto. Applied once, after
// parsing and before validation; applying them twice changes nothing.
#pragma once

#include "kiln/v1/job.pb.h"

namespace kiln::spec {

void ApplyDefaults(kiln::v1::JobSpec* spec);

}  // namespace kiln::spec
