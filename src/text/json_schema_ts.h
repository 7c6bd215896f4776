// JSON Schema -> the TypeScript-like type text that harmony puts in the developer message's
// `namespace functions { ... }` (gpt-oss-spec.md §4.4), following the openai/harmony library's layout.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace mxs::harmony {

// The type of `schema` as TypeScript text. Objects span lines: "{\n" + one "{indent}name[?]: type,"
// line per property (property comments above it, "// default: x" after it) + "{indent}}"; nested objects
// indent by 4 more spaces. integer -> number, string enums -> "a" | "b", arrays -> T[] ((A | B)[] for
// unions), anyOf and type lists -> A | B, oneOf -> one "\n{indent} | T" line per variant, null -> null,
// anything unknown -> any. Never throws: a malformed schema renders as `any` where it is malformed.
std::string json_schema_to_typescript(const nlohmann::ordered_json& schema, const std::string& indent = "");

}  // namespace mxs::harmony
