// The annotated .proto files of sipd, built into sipctl (`sipctl proto`): the reference
// for stub users who have no source tree (reflection drops the comments, so the status
// table and the field documentation live only here and under share/sipd/proto).
#pragma once

#include <string_view>
#include <vector>

namespace sipd::sipctl {

struct ProtoFile {
  std::string_view path;  // "sipd/usrloc/v1/usrloc.proto", relative to proto/
  std::string_view text;
};

// Every file under proto/, in path order.
const std::vector<ProtoFile>& ProtoFiles();

}  // namespace sipd::sipctl
