// The request path's XML reader: the common shape of a methodCall, read with expat's
// SAX interface (no element tree, no value objects), into an mi::Request.
//
// It accepts only documents it understands completely:
//   [<?xml version=.. encoding="UTF-8"?>] <methodCall> <methodName>NAME</methodName>
//   [<params> (<param> <value> V </value> </param>)* </params>] </methodCall>
// with V = text (untyped string), <string>, <int>/<i4> (-?digits, 32-bit) or <boolean>
// (0 or 1), whitespace between elements, no attributes, comments, CDATA sections,
// processing instructions or other encodings. For anything else Parse() returns false
// and the caller asks xmlrpc-c, whose result is authoritative (faults included); for
// what it accepts it yields exactly the command and arguments that xmlrpc-c's
// parseCall plus XmlrpcProcessor's mapping yield (tests/xmlrpc/fast_call_parser_test.cc
// compares the two on every test document and on generated variants).
//
// Why: xmlrpc-c builds an element tree, then xmlrpc_value objects, then C++ wrappers,
// and reseeds random() for every document; on `version` that was most of the server's
// user time per request. The parser is reused (XML_ParserReset) and given a fixed hash
// salt, so a document costs no system call and no allocation beyond the request's own;
// the plain `<?xml version="1.0"...?>` declarations are skipped (expat's defaults are the
// same, and processing one cost about 0.8 us, as much as the rest of a `version` call).
//
// Thread-safety: none; one parser per thread (XmlrpcProcessor keeps one per thread).
#pragma once

#include <memory>
#include <string_view>

#include "registry/command.h"

namespace sipd::xmlrpc {

class FastCallParser {
 public:
  FastCallParser();
  ~FastCallParser();
  FastCallParser(const FastCallParser&) = delete;
  FastCallParser& operator=(const FastCallParser&) = delete;

  // True and `*request` filled (command, args; args_error OK) if `xml` is a methodCall
  // of the accepted shape whose method is not a system.* method; false otherwise
  // (`*request` is then unspecified).
  bool Parse(std::string_view xml, mi::Request* request);

  // The reader's state, handed to expat's C callbacks (defined in the .cc file).
  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace sipd::xmlrpc
