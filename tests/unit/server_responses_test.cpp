// POST /v1/responses (server/responses_handler.h): the request translation (responses_schema.h) onto the chat request,
// with errors naming the Responses parameters; then, over the scripted server (server_scripted_fixture.h), harmony
// output as output items (reasoning, message, function_call), the response object, usage, and the typed event stream
// (every event named as its data's type, sequence numbers 0..n-1, deltas that add up to the final items).
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "server/responses_schema.h"
#include "server_scripted_fixture.h"

namespace mxs::server {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;
using test::HttpResult;
using test::kAnswer;
using test::kToolCall;
using test::http_post;

ApiError responses_error(const std::string& body) {
  try {
    parse_responses_request(ordered_json::parse(body));
  } catch (const ApiException& e) {
    return e.error;
  }
  ADD_FAILURE() << "accepted: " << body;
  return {};
}

TEST(ResponsesSchema, InputItemsBecomeChatMessages) {
  const ResponsesRequest r = parse_responses_request(ordered_json::parse(R"({
    "model": "m", "instructions": "Be brief.", "max_output_tokens": 64, "temperature": 0.5, "seed": 3,
    "reasoning": {"effort": "high"}, "metadata": {"k": "v"}, "store": true,
    "tools": [{"type": "function", "name": "get_weather", "description": "d", "strict": true,
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    "tool_choice": {"type": "function", "name": "get_weather"},
    "input": [
      {"role": "user", "content": "Weather in Paris?"},
      {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Need it."}]},
      {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
      {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
      {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
      {"role": "user", "content": [{"type": "input_text", "text": "And "}, {"type": "input_text", "text": "Rome?"}]}
    ]})"));
  using harmony::Role;
  const auto& m = r.chat.messages;
  ASSERT_EQ(m.size(), 6u);
  EXPECT_EQ(m[0].role, Role::kDeveloper);
  EXPECT_EQ(m[0].content, "Be brief.");
  EXPECT_EQ(m[1].role, Role::kUser);
  EXPECT_EQ(m[2].role, Role::kAssistant);  // the reasoning and the call: one assistant turn
  EXPECT_EQ(m[2].reasoning, "Need it.");
  ASSERT_EQ(m[2].tool_calls.size(), 1u);
  EXPECT_EQ(m[2].tool_calls[0].id, "call_1");
  EXPECT_EQ(m[2].tool_calls[0].name, "get_weather");
  EXPECT_EQ(m[3].role, Role::kTool);
  EXPECT_EQ(m[3].tool_call_id, "call_1");
  EXPECT_EQ(m[3].content, "sunny");
  EXPECT_EQ(m[4].role, Role::kAssistant);
  EXPECT_EQ(m[4].content, "Sunny.");
  EXPECT_EQ(m[5].content, "And Rome?");
  EXPECT_EQ(r.chat.tool_choice, ToolChoice::kNamed);
  EXPECT_EQ(r.chat.tool_choice_name, "get_weather");
  ASSERT_EQ(r.chat.tools.size(), 1u);
  EXPECT_EQ(r.chat.reasoning_effort, harmony::ReasoningEffort::kHigh);
  EXPECT_EQ(r.chat.gen.max_tokens, 64);
  EXPECT_FLOAT_EQ(r.chat.gen.sampling.temperature, 0.5f);
  EXPECT_TRUE(r.chat.gen.seed_given);
  EXPECT_EQ(r.echo["instructions"], "Be brief.");
  EXPECT_EQ(r.echo["tool_choice"]["name"], "get_weather");
  EXPECT_EQ(r.echo["metadata"]["k"], "v");
  EXPECT_EQ(r.echo["store"], false);  // nothing is stored, whatever was asked
  // A reasoning item before an answer: one assistant message with both.
  const ResponsesRequest a = parse_responses_request(ordered_json::parse(R"({"input": [
      {"role": "user", "content": "x"}, {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "r"}]},
      {"role": "assistant", "content": "y"}, {"role": "user", "content": "z"}]})"));
  ASSERT_EQ(a.chat.messages.size(), 3u);
  EXPECT_EQ(a.chat.messages[1].reasoning, "r");
  EXPECT_EQ(a.chat.messages[1].content, "y");
  // text.format json_schema: compiled, and kept for the prompt.
  const ResponsesRequest js = parse_responses_request(ordered_json::parse(R"({"input": "x", "text": {"format":
      {"type": "json_schema", "name": "w", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}})"));
  ASSERT_NE(js.chat.gen.json_schema, nullptr);
  EXPECT_EQ(js.chat.gen.json_schema_format.name, "w");
}

TEST(ResponsesSchema, ErrorsNameTheResponsesParameter) {
  const struct {
    const char* body;
    const char* param;
  } cases[] = {
      {R"({})", "input"},
      {R"({"input": []})", "input"},
      {R"({"input": 3})", "input"},
      {R"({"input": "x", "previous_response_id": "resp_1"})", "previous_response_id"},  // (no store)
      {R"({"input": "x", "previous_response_id": 5})", "previous_response_id"},
      {R"({"input": "x", "background": true})", "background"},
      {R"({"input": "x", "include": ["message.output_text.logprobs"]})", "include"},
      {R"({"input": "x", "max_output_tokens": 0})", "max_output_tokens"},
      {R"({"input": "x", "temperature": 3})", "temperature"},
      {R"({"input": "x", "reasoning": {"effort": "extreme"}})", "reasoning.effort"},
      {R"({"input": "x", "text": {"format": {"type": "yaml"}}})", "text.format"},
      {R"({"input": "x", "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object",
          "properties": {"a": {"type": "string", "pattern": "x"}}}}}})", "text.format"},
      {R"({"input": "x", "tools": [{"type": "web_search"}]})", "tools[0]"},
      {R"({"input": "x", "tool_choice": {"type": "function"}})", "tool_choice"},
      {R"({"input": "x", "tool_choice": "required"})", "tool_choice"},
      {R"({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]})",
       "input[0].content[0]"},
      {R"({"input": [{"role": "bot", "content": "x"}]})", "input[0]"},
      {R"({"input": [{"type": "item_reference", "id": "x"}]})", "input[0]"},
      {R"({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]})", "input[0]"},
      {R"({"input": "x", "truncation": "auto"})", "truncation"},
      {R"({"input": "x", "store": "yes"})", "store"},
  };
  for (const auto& c : cases) {
    const ApiError e = responses_error(c.body);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << ": " << e.message;
  }
  EXPECT_NE(responses_error(R"({"input": "x", "max_output_tokens": 0})").message.find("max_output_tokens"),
            std::string::npos);
}


const json kTools = json::parse(R"([{"type":"function","name":"get_weather","parameters":
  {"type":"object","properties":{"city":{"type":"string"}}}}])");

// The store keeps the least recently used last; previous_response_id continues a stored conversation (its input
// items, then its output items), the instructions not carried over.
TEST(ResponsesSchema, StoredConversationsContinue) {
  ResponseStore store(2);
  const ordered_json conversation = ordered_json::parse(R"([{"role": "user", "content": "Weather?"},
      {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "Need the tool."}]},
      {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}])");
  store.put("resp_a", {json{{"id", "resp_a"}}, conversation});
  store.put("resp_b", {json{{"id", "resp_b"}}, ordered_json::array()});
  ASSERT_TRUE(store.get("resp_a"));  // (now the most recently used)
  store.put("resp_c", {json{{"id", "resp_c"}}, ordered_json::array()});
  EXPECT_FALSE(store.get("resp_b"));
  EXPECT_TRUE(store.get("resp_a") && store.get("resp_c"));
  EXPECT_EQ(store.size(), 2u);

  const ResponsesRequest r = parse_responses_request(ordered_json::parse(R"({"previous_response_id": "resp_a",
      "instructions": "New.", "input": [{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]})"),
                                                     &store);
  using harmony::Role;
  ASSERT_EQ(r.chat.messages.size(), 4u);
  EXPECT_EQ(r.chat.messages[0].content, "New.");
  EXPECT_EQ(r.chat.messages[1].content, "Weather?");
  EXPECT_EQ(r.chat.messages[2].reasoning, "Need the tool.");
  EXPECT_EQ(r.chat.messages[2].tool_calls.at(0).id, "call_1");
  EXPECT_EQ(r.chat.messages[3].role, Role::kTool);
  EXPECT_EQ(r.conversation.size(), 4u);
  EXPECT_TRUE(r.store);
  EXPECT_EQ(r.echo["previous_response_id"], "resp_a");
  EXPECT_TRUE(store.erase("resp_a"));
  EXPECT_FALSE(store.erase("resp_a"));
  try {
    parse_responses_request(ordered_json::parse(R"({"previous_response_id": "resp_a", "input": "x"})"), &store);
    ADD_FAILURE() << "a deleted response was continued";
  } catch (const ApiException& e) {
    EXPECT_EQ(e.error.param, "previous_response_id");
  }
  EXPECT_FALSE(parse_responses_request(ordered_json::parse(R"({"input": "x", "store": false})"), &store).store);
  // serve --responses-store 0: nothing is kept, and responses say so.
  ResponseStore none(0);
  none.put("resp_x", {json{{"id", "resp_x"}}, ordered_json::array()});
  EXPECT_EQ(none.size(), 0u);
  const ResponsesRequest unkept = parse_responses_request(ordered_json::parse(R"({"input": "x"})"), &none);
  EXPECT_FALSE(unkept.store);
  EXPECT_EQ(unkept.echo["store"], false);
}

// The typed events of a stream: `event: <name>` + `data: <json>`, the name equal to the data's type.
std::vector<json> typed_events(const std::string& body) {
  std::vector<json> out;
  for (const std::string& ev : test::sse_blocks(body)) {
    const size_t nl = ev.find('\n');
    EXPECT_EQ(ev.rfind("event: ", 0), 0u) << ev;
    EXPECT_EQ(ev.compare(nl + 1, 6, "data: "), 0) << ev;
    json data = json::parse(ev.substr(nl + 7));
    EXPECT_EQ(data["type"], ev.substr(7, nl - 7));
    out.push_back(std::move(data));
  }
  return out;
}

class ServerResponses : public test::ScriptedServerTest {
 protected:
  json respond(json body, int status = 200) {
    HttpResult r = http_post(server_->port(), "/v1/responses", body.dump());
    EXPECT_EQ(r.status, status) << r.body;
    return json::parse(r.body);
  }
  std::vector<json> stream(json body) {
    body["stream"] = true;
    HttpResult r = http_post(server_->port(), "/v1/responses", body.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.headers.find("Content-Type: text/event-stream"), std::string::npos);
    EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
    return typed_events(r.body);
  }
};

TEST_F(ServerResponses, ReasoningThenMessage) {
  script(kAnswer);
  const json r = respond({{"input", "Weather in Paris?"}, {"instructions", "Be brief."}});
  EXPECT_EQ(r["object"], "response");
  EXPECT_EQ(r["id"].get<std::string>().rfind("resp_", 0), 0u);
  EXPECT_EQ(r["status"], "completed");
  EXPECT_TRUE(r["incomplete_details"].is_null());
  EXPECT_EQ(r["model"], "scripted");
  EXPECT_EQ(r["instructions"], "Be brief.");
  ASSERT_EQ(r["output"].size(), 2u);
  const json& rs = r["output"][0];
  EXPECT_EQ(rs["type"], "reasoning");
  EXPECT_EQ(rs["id"].get<std::string>().rfind("rs_", 0), 0u);
  EXPECT_EQ(rs["content"][0]["type"], "reasoning_text");
  EXPECT_EQ(rs["content"][0]["text"], "User asks about weather. Answer briefly.");
  const json& msg = r["output"][1];
  EXPECT_EQ(msg["type"], "message");
  EXPECT_EQ(msg["role"], "assistant");
  EXPECT_EQ(msg["status"], "completed");
  EXPECT_EQ(msg["content"][0]["type"], "output_text");
  EXPECT_EQ(msg["content"][0]["text"], "It is sunny in Paris.");
  const int n = int(tok_->encode_with_specials(kAnswer).size());
  EXPECT_EQ(r["usage"]["output_tokens"], n);
  EXPECT_EQ(r["usage"]["total_tokens"], r["usage"]["input_tokens"].get<int>() + n);
  const int reasoning = r["usage"]["output_tokens_details"]["reasoning_tokens"];
  EXPECT_GT(reasoning, 5);
  EXPECT_LT(reasoning, n - 5);
}

TEST_F(ServerResponses, StreamEventsAddUpToTheResponse) {
  script(kAnswer);
  const std::vector<json> ev = stream({{"input", "Hi"}});
  ASSERT_GE(ev.size(), 10u);
  for (size_t i = 0; i < ev.size(); ++i) EXPECT_EQ(ev[i]["sequence_number"], int(i));
  EXPECT_EQ(ev[0]["type"], "response.created");
  EXPECT_EQ(ev[0]["response"]["status"], "in_progress");
  EXPECT_TRUE(ev[0]["response"]["output"].empty());
  EXPECT_EQ(ev[1]["type"], "response.in_progress");
  EXPECT_EQ(ev.back()["type"], "response.completed");
  const json& final_response = ev.back()["response"];
  EXPECT_EQ(final_response["id"], ev[0]["response"]["id"]);
  // Rebuild the output from the events, as a client's accumulator does.
  std::vector<std::string> added_types;
  std::map<int, std::string> text;
  for (const json& e : ev) {
    const std::string t = e["type"];
    if (t == "response.output_item.added") {
      EXPECT_EQ(e["output_index"], int(added_types.size()));
      added_types.push_back(e["item"]["type"]);
    } else if (t == "response.output_text.delta" || t == "response.reasoning_text.delta") {
      EXPECT_LT(e["output_index"].get<int>(), int(added_types.size()));
      EXPECT_EQ(e["item_id"], final_response["output"][e["output_index"].get<int>()]["id"]);
      text[e["output_index"]] += e["delta"].get<std::string>();
    } else if (t == "response.output_text.done" || t == "response.reasoning_text.done") {
      EXPECT_EQ(e["text"], text[e["output_index"]]);
    }
  }
  EXPECT_EQ(added_types, (std::vector<std::string>{"reasoning", "message"}));
  EXPECT_EQ(text[0], "User asks about weather. Answer briefly.");
  EXPECT_EQ(text[1], "It is sunny in Paris.");
  EXPECT_EQ(final_response["output"][1]["content"][0]["text"], text[1]);
  EXPECT_EQ(final_response["usage"]["output_tokens"], int(tok_->encode_with_specials(kAnswer).size()));
}

TEST_F(ServerResponses, FunctionCallsAndTheirStream) {
  script(kToolCall);
  const json r = respond({{"input", "Weather in Paris?"}, {"tools", kTools}});
  ASSERT_EQ(r["output"].size(), 2u);
  const json& call = r["output"][1];
  EXPECT_EQ(call["type"], "function_call");
  EXPECT_EQ(call["name"], "get_weather");
  EXPECT_EQ(call["arguments"], "{\"city\":\"Paris\"}");
  EXPECT_EQ(call["call_id"].get<std::string>().rfind("call_", 0), 0u);
  EXPECT_EQ(call["id"].get<std::string>().rfind("fc_", 0), 0u);
  EXPECT_EQ(call["status"], "completed");
  EXPECT_EQ(r["status"], "completed");
  EXPECT_EQ(r["tools"], kTools);

  const std::vector<json> ev = stream({{"input", "Hi"}, {"tools", kTools}});
  std::string args;
  for (const json& e : ev) {
    if (e["type"] == "response.function_call_arguments.delta") args += e["delta"].get<std::string>();
    if (e["type"] == "response.function_call_arguments.done") {
      EXPECT_EQ(e["arguments"], args);
    }
  }
  EXPECT_EQ(args, "{\"city\":\"Paris\"}");
  // tool_choice none: the call is dropped.
  const json none = respond({{"input", "Hi"}, {"tools", kTools}, {"tool_choice", "none"}});
  for (const json& item : none["output"]) EXPECT_NE(item["type"], "function_call");
}

TEST_F(ServerResponses, LengthLimitIsIncomplete) {
  script(kAnswer);
  const json r = respond({{"input", "Hi"}, {"max_output_tokens", 5}});
  EXPECT_EQ(r["status"], "incomplete");
  EXPECT_EQ(r["incomplete_details"]["reason"], "max_output_tokens");
  EXPECT_EQ(r["usage"]["output_tokens"], 5);
  ASSERT_EQ(r["output"].size(), 1u);
  EXPECT_EQ(r["output"][0]["type"], "reasoning");
  script("{\"city\":\"Paris\"}<|call|>");  // (after the prefilled call header: the arguments)
  const json cut = respond({{"input", "Hi"}, {"tools", kTools}, {"max_output_tokens", 3},
                            {"tool_choice", {{"type", "function"}, {"name", "get_weather"}}}});
  ASSERT_EQ(cut["output"].size(), 1u);
  EXPECT_EQ(cut["output"][0]["type"], "function_call");
  EXPECT_EQ(cut["output"][0]["status"], "incomplete");
  const std::vector<json> ev = stream({{"input", "Hi"}, {"max_output_tokens", 5}});
  EXPECT_EQ(ev.back()["type"], "response.incomplete");
}

TEST_F(ServerResponses, StoredResponsesRetrievedContinuedDeleted) {
  script(kAnswer);
  const json first = respond({{"input", "Weather in Paris?"}});
  EXPECT_EQ(first["store"], true);
  const std::string id = first["id"];
  HttpResult got = test::http_request(server_->port(), "GET", "/v1/responses/" + id, "");
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(json::parse(got.body), first);
  // The follow-up's prompt holds the first exchange: its input, and its answer (the reasoning before a final answer
  // is dropped by the harmony renderer).
  const json second = respond({{"input", "And tomorrow?"}, {"previous_response_id", id}});
  EXPECT_EQ(second["previous_response_id"], id);
  EXPECT_GT(second["usage"]["input_tokens"].get<int>(), first["usage"]["input_tokens"].get<int>() + 5);
  HttpResult del = test::http_request(server_->port(), "DELETE", "/v1/responses/" + id, "");
  ASSERT_EQ(del.status, 200);
  EXPECT_EQ(json::parse(del.body)["deleted"], true);
  EXPECT_EQ(test::http_request(server_->port(), "GET", "/v1/responses/" + id, "").status, 404);
  EXPECT_EQ(test::http_request(server_->port(), "DELETE", "/v1/responses/" + id, "").status, 404);
  const json unstored = respond({{"input", "Hi"}, {"store", false}});
  EXPECT_EQ(unstored["store"], false);
  EXPECT_EQ(test::http_request(server_->port(), "GET", "/v1/responses/" + unstored["id"].get<std::string>(), "").status,
            404);
  EXPECT_EQ(test::http_request(server_->port(), "GET", "/v1/responses/a/b", "").status, 404);
}

TEST_F(ServerResponses, RequestErrors) {
  script(kAnswer);
  json e = respond({{"input", "Hi"}, {"max_output_tokens", 5000}}, 400)["error"];
  EXPECT_EQ(e["code"], "context_length_exceeded");
  EXPECT_EQ(e["param"], "max_output_tokens");
  EXPECT_NE(e["message"].get<std::string>().find("max_output_tokens"), std::string::npos) << e["message"];
  e = respond({{"input", "Hi"}, {"model", "gpt-9"}}, 404)["error"];
  EXPECT_EQ(e["param"], "model");
  e = respond({{"input", "Hi"}, {"previous_response_id", "resp_x"}}, 400)["error"];  // (never stored)
  EXPECT_EQ(e["param"], "previous_response_id");
}

}  // namespace
}  // namespace mxs::server
