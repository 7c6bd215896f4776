// JSON Schema -> harmony's TypeScript-like types. The layout (where comments go, indents, "?" for optional
// properties, the multi-line oneOf form, "// default: x") reproduces the openai/harmony renderer, which is
// what the model saw in training. Deliberate differences, all for schemas harmony renders as broken TS:
// multi-line descriptions get "// " on every line, unions inside arrays are parenthesized ((A | B)[]),
// anyOf renders as a union (harmony: any), type null renders as null (harmony: any), enums of any type
// render as literal unions, `properties` without `type` is still an object, enum strings are JSON-escaped.
#include "text/json_schema_ts.h"

#include <string_view>

namespace mxs::harmony {

namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kNestedIndent = "    ";  // properties of a nested object
constexpr const char* kVariantIndent = "   ";  // lines inside a oneOf variant (aligned after " | ")

const Json* member(const Json& schema, const char* key) {
  if (!schema.is_object()) return nullptr;
  auto it = schema.find(key);
  return it == schema.end() ? nullptr : &*it;
}

const std::string* string_member(const Json& schema, const char* key) {
  const Json* v = member(schema, key);
  return v && v->is_string() ? v->get_ptr<const std::string*>() : nullptr;
}

bool has_enum(const Json& schema) {
  const Json* e = member(schema, "enum");
  return e && e->is_array() && !e->empty();
}

bool is_nullable(const Json& schema) {
  const Json* n = member(schema, "nullable");
  return n && n->is_boolean() && n->get<bool>();
}

std::string literal(const Json& value) { return value.dump(); }  // "a" quoted and escaped; 3; true; null

// "default: x" as harmony writes it: strings quoted unless the schema is an enum (then bare).
std::string default_comment(const Json& schema, const Json& value) {
  if (value.is_string()) {
    const auto& s = value.get_ref<const std::string&>();
    return has_enum(schema) ? "default: " + s : "default: \"" + s + "\"";
  }
  return "default: " + value.dump();
}

// One "// line" per line of `text`.
void append_comment_lines(std::string& out, const std::string& indent, std::string_view text) {
  size_t pos = 0;
  while (true) {
    const size_t nl = text.find('\n', pos);
    out += indent;
    out += "// ";
    out += text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    out += '\n';
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
}

// Whether the rendered type is a top-level union, so that `T[]` needs parentheses.
bool renders_as_union(const Json& schema) {
  if (const Json* e = member(schema, "enum"); e && e->is_array() && e->size() > 1) return true;
  if (const Json* a = member(schema, "anyOf"); a && a->is_array() && a->size() > 1) return true;
  if (const Json* o = member(schema, "oneOf"); o && o->is_array() && !o->empty()) return true;
  if (const Json* t = member(schema, "type"); t && t->is_array() && t->size() > 1) return true;
  return false;
}

std::string with_null(const Json& schema, std::string type) {
  if (is_nullable(schema) && type.find("null") == std::string::npos) type += " | null";
  return type;
}

std::string render_type(const Json& schema, const std::string& indent);

// The "{ ... }" of an object schema.
std::string render_object(const Json& schema, const std::string& indent) {
  std::string out;
  if (const std::string* desc = string_member(schema, "description")) append_comment_lines(out, indent, *desc);
  out += "{\n";
  const Json* props = member(schema, "properties");
  if (props && props->is_object()) {
    std::vector<std::string> required;
    if (const Json* req = member(schema, "required"); req && req->is_array())
      for (const Json& r : *req)
        if (r.is_string()) required.push_back(r.get<std::string>());
    auto is_required = [&](const std::string& key) {
      for (const auto& r : required)
        if (r == key) return true;
      return false;
    };

    for (const auto& [key, prop] : props->items()) {
      const std::string optional = is_required(key) ? "" : "?";
      if (const std::string* title = string_member(prop, "title")) {
        append_comment_lines(out, indent, *title);
        out += indent + "//\n";
      }
      const Json* one_of = member(prop, "oneOf");
      const bool multi_line_union = one_of && one_of->is_array();
      const std::string* desc = string_member(prop, "description");
      if (!multi_line_union && desc) append_comment_lines(out, indent, *desc);
      if (const Json* examples = member(prop, "examples"); examples && examples->is_array() && !examples->empty()) {
        out += indent + "// Examples:\n";
        for (const Json& ex : *examples)
          if (ex.is_string()) out += indent + "// - \"" + ex.get<std::string>() + "\"\n";
      }

      if (multi_line_union) {
        // The property's description goes above it unless the first variant repeats it; each variant
        // is one " | T // comments" line.
        const Json* first = one_of->empty() ? nullptr : &(*one_of)[0];
        const std::string* first_desc = first ? string_member(*first, "description") : nullptr;
        const bool desc_above = desc && !(first_desc && *first_desc == *desc);
        if (desc_above) append_comment_lines(out, indent, *desc);
        if (const Json* def = member(prop, "default")) out += indent + "// " + default_comment(prop, *def) + "\n";
        out += indent + key + optional + ":\n";
        for (size_t i = 0; i < one_of->size(); ++i) {
          const Json& variant = (*one_of)[i];
          out += indent + " | " + with_null(variant, render_type(variant, indent + kVariantIndent));
          std::string comments;
          const std::string* vdesc = string_member(variant, "description");
          if (vdesc && !(i == 0 && desc_above) && !(desc && *vdesc == *desc)) comments = *vdesc;
          if (const Json* def = member(variant, "default"))
            comments += (comments.empty() ? "" : " ") + default_comment(variant, *def);
          if (!comments.empty()) out += " // " + comments;
          out += '\n';
        }
        out += indent + ",\n";
        continue;
      }

      out += indent + key + optional + ": " + with_null(prop, render_type(prop, indent + kNestedIndent)) + ",";
      if (const Json* def = member(prop, "default")) out += " // " + default_comment(prop, *def);
      out += '\n';
    }
  }
  out += indent + "}";
  return out;
}

std::string render_type(const Json& schema, const std::string& indent) {
  if (!schema.is_object()) return "any";

  if (const Json* one_of = member(schema, "oneOf"); one_of && one_of->is_array()) {
    std::string out;
    for (const Json& variant : *one_of) {
      out += "\n" + indent + " | " + with_null(variant, render_type(variant, indent + kVariantIndent));
      std::string comments;
      if (const std::string* d = string_member(variant, "description")) comments = *d;
      if (const Json* def = member(variant, "default"))
        comments += (comments.empty() ? "" : " ") + default_comment(variant, *def);
      if (!comments.empty()) out += " // " + comments;
    }
    return out;
  }

  if (const Json* any_of = member(schema, "anyOf"); any_of && any_of->is_array() && !any_of->empty()) {
    std::string out;
    for (const Json& variant : *any_of) {
      if (!out.empty()) out += " | ";
      out += with_null(variant, render_type(variant, indent));
    }
    return out;
  }

  if (has_enum(schema)) {
    std::string out;
    for (const Json& v : schema["enum"]) {
      if (!out.empty()) out += " | ";
      out += literal(v);
    }
    return out;
  }
  if (const Json* c = member(schema, "const")) return literal(*c);

  const Json* type = member(schema, "type");
  if (type && type->is_array()) {
    std::string out;
    for (const Json& t : *type) {
      if (!t.is_string()) continue;
      if (!out.empty()) out += " | ";
      const auto& name = t.get_ref<const std::string&>();
      out += name == "integer" ? "number" : name;
    }
    return out.empty() ? "any" : out;
  }

  const std::string name = type && type->is_string() ? type->get<std::string>() : "";
  if (name == "object" || (name.empty() && member(schema, "properties"))) return render_object(schema, indent);
  if (name == "string") return "string";
  if (name == "number" || name == "integer") return "number";
  if (name == "boolean") return "boolean";
  if (name == "null") return "null";
  if (name == "array") {
    const Json* items = member(schema, "items");
    if (!items || !items->is_object()) return "Array<any>";
    const std::string element = render_type(*items, indent);
    return renders_as_union(*items) ? "(" + element + ")[]" : element + "[]";
  }
  return "any";
}

}  // namespace

std::string json_schema_to_typescript(const nlohmann::ordered_json& schema, const std::string& indent) {
  return render_type(schema, indent);
}

}  // namespace mxs::harmony
