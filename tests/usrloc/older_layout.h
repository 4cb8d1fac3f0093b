// The usrloc database layout of sipd versions before contacts were packed into
// usrloc_aor.contacts: one row per contact in a usrloc_contact table (first a rowid
// table, later WITHOUT ROWID), and usrloc_aor without `contacts`. Tests write such files
// to check that the store packs them at start-up.
#pragma once

#include <string>

#include "absl/strings/str_cat.h"

namespace sipd::usrloc::testing {

// CREATE TABLE statements of the older layout; rows are the test's own.
inline std::string OlderLayoutSchema(bool contact_table_without_rowid) {
  return absl::StrCat(R"sql(
CREATE TABLE usrloc_aor (table_name TEXT NOT NULL, aor TEXT NOT NULL, version INTEGER NOT NULL,
  PRIMARY KEY (table_name, aor)) WITHOUT ROWID;
CREATE TABLE usrloc_contact (table_name TEXT NOT NULL, aor TEXT NOT NULL, contact TEXT NOT NULL,
  position INTEGER NOT NULL, expires INTEGER NOT NULL, q INTEGER NOT NULL, callid TEXT NOT NULL,
  cseq INTEGER NOT NULL, flags INTEGER NOT NULL, cflags INTEGER NOT NULL,
  user_agent TEXT NOT NULL, received TEXT NOT NULL, path TEXT NOT NULL, socket TEXT NOT NULL,
  methods INTEGER NOT NULL, sip_instance TEXT NOT NULL, attr TEXT NOT NULL,
  last_modified INTEGER NOT NULL, PRIMARY KEY (table_name, aor, contact)))sql",
                      contact_table_without_rowid ? " WITHOUT ROWID;\n" : ";\n");
}

}  // namespace sipd::usrloc::testing
