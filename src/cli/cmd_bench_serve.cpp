// `mxserve bench serve`: HTTP load generator against a running OpenAI-compatible server (this one or any
// other), streaming chat or completions requests at each concurrency level; `vllm bench serve` metrics plus
// time to first answer token and reasoning tokens. Markdown table on stdout, optional JSON (--json FILE).
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/error.h"
#include "common/paths.h"
#include "common/log.h"
#include "server/bench_client.h"
#include "server/bench_metrics.h"

namespace {

namespace bench = mxs::server::bench;
using nlohmann::json;

struct ServeBenchArgs {
  std::string url = "http://127.0.0.1:8000";
  std::string endpoint = "chat";
  std::string concurrency = "1,8,64";
  double request_rate = 0;
  int num_prompts = 64;
  int input_len = 128;
  int output_len = 128;
  std::string dataset = "random";
  std::string goodput;
  std::string model;
  std::string api_key;
  std::string json_path;
  double timeout_s = 300;
  uint64_t seed = 0;
  double temperature = 0.0;  // as `vllm bench serve`: greedy, so the run compares with `bench throughput`
  bool ignore_eos = false;   // as `vllm bench serve --ignore-eos`: every request generates max_tokens
  std::string response_format = "text";  // or json_object: structured outputs under load
};

// Random prompts: `input_len` words drawn from common lower-case English words, each of which is one token
// of the o200k vocabulary with its leading space, so a prompt is about input_len tokens (the chat template
// adds its own ~20 tokens; the table reports the server's count).
std::string random_prompt(std::mt19937_64& rng, int input_len) {
  static const char* const kWords[] = {
      "time",  "year",   "people", "way",   "day",   "man",   "thing", "woman", "life",  "child", "world", "school",
      "state", "family", "group",  "country", "problem", "hand", "part", "place", "case", "week", "company",
      "system", "program", "question", "work", "government", "number", "night", "point", "home", "water", "room",
      "mother", "area",  "money",  "story", "fact",  "month", "lot",   "right", "study", "book",  "eye",   "job",
      "word",  "business", "issue", "side",  "kind",  "head",  "house", "service", "friend", "father", "power",
      "hour",  "game",   "line",   "end",   "member", "law",  "car",   "city",  "name",  "president", "team",
      "minute", "idea",  "kid",    "body",  "information", "back", "parent", "face", "others", "level", "office",
      "door",  "health", "person", "art",   "war",   "history", "party", "result", "change", "morning", "reason",
      "research", "girl", "guy",   "moment", "air",  "teacher", "force", "education"};
  constexpr size_t kCount = sizeof(kWords) / sizeof(kWords[0]);
  std::uniform_int_distribution<size_t> pick(0, kCount - 1);
  std::string p;
  for (int i = 0; i < input_len; ++i) {
    if (i) p += ' ';
    p += kWords[pick(rng)];
  }
  return p;
}

// One request of the dataset: a prompt or a message list, and its output length.
struct Item {
  json messages;  // null for a plain prompt
  std::string prompt;
  int max_tokens = 0;
};

// FILE.jsonl: one object per line, {"prompt": "..."} or {"messages": [...]}, optional "max_tokens".
std::vector<Item> load_jsonl(const std::string& path, int default_max_tokens) {
  std::ifstream f(path);
  MXS_CHECK(f.good(), mxs::strfmt("--dataset %s: cannot open the file", path.c_str()));
  std::vector<Item> items;
  std::string line;
  for (int lineno = 1; std::getline(f, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const std::exception& e) {
      throw mxs::Error(mxs::strfmt("--dataset %s:%d: not JSON (%s)", path.c_str(), lineno, e.what()));
    }
    Item it;
    it.max_tokens = j.value("max_tokens", default_max_tokens);
    if (j.contains("messages") && j["messages"].is_array())
      it.messages = j["messages"];
    else if (j.contains("prompt") && j["prompt"].is_string())
      it.prompt = j["prompt"].get<std::string>();
    else
      throw mxs::Error(mxs::strfmt("--dataset %s:%d: needs \"prompt\" (a string) or \"messages\" (an array)",
                                   path.c_str(), lineno));
    items.push_back(std::move(it));
  }
  MXS_CHECK(!items.empty(), mxs::strfmt("--dataset %s: no requests in the file", path.c_str()));
  return items;
}

// The streaming request body. Without ignore_eos a request may end before max_tokens; the metrics use the token
// counts of the usage chunk either way.
std::string request_body(const Item& it, bool chat, const std::string& model, const ServeBenchArgs& a) {
  json b = {{"model", model}, {"max_tokens", it.max_tokens}, {"stream", true}, {"temperature", a.temperature},
            {"stream_options", {{"include_usage", true}}}};
  if (a.ignore_eos) b["ignore_eos"] = true;
  if (a.response_format != "text") b["response_format"] = {{"type", a.response_format}};
  if (chat) {
    b["messages"] = it.messages.is_null() ? json::array({{{"role", "user"}, {"content", it.prompt}}}) : it.messages;
  } else {
    MXS_CHECK(it.messages.is_null(), "--endpoint completions needs prompts; the dataset has a \"messages\" line");
    b["prompt"] = it.prompt;
  }
  return b.dump();
}

std::string fmt(double v, int decimals = 2) { return mxs::strfmt("%.*f", decimals, v); }

void print_table(const std::vector<int>& levels, const std::vector<bench::Summary>& sums, bool has_slo) {
  std::string header = "| Metric |", rule = "|---|";
  for (int c : levels) header += mxs::strfmt(" c=%d |", c), rule += "---:|";
  std::printf("%s\n%s\n", header.c_str(), rule.c_str());
  auto row = [&](const char* name, auto get) {
    std::string line = mxs::strfmt("| %s |", name);
    for (const auto& s : sums) line += mxs::strfmt(" %s |", get(s).c_str());  // (GCC 12: no -Wrestrict false alarm)
    std::printf("%s\n", line.c_str());
  };
  using S = bench::Summary;
  row("Completed requests", [](const S& s) { return std::to_string(s.completed); });
  row("Failed requests", [](const S& s) { return std::to_string(s.failed); });
  row("Duration (s)", [](const S& s) { return fmt(s.duration_s); });
  row("Total input tokens", [](const S& s) { return std::to_string(s.total_input_tokens); });
  row("Total output tokens", [](const S& s) { return std::to_string(s.total_output_tokens); });
  row("Total reasoning tokens", [](const S& s) { return std::to_string(s.total_reasoning_tokens); });
  row("Request throughput (req/s)", [](const S& s) { return fmt(s.request_throughput); });
  row("Output throughput (tok/s)", [](const S& s) { return fmt(s.output_throughput); });
  row("Total throughput (tok/s)", [](const S& s) { return fmt(s.total_token_throughput); });
  row("Peak output throughput (tok/s)", [](const S& s) { return fmt(s.peak_output_throughput); });
  if (has_slo) row("Goodput (req/s)", [](const S& s) { return fmt(s.goodput); });
  auto dist = [&](const char* name, bench::Distribution S::*d) {
    const char* stats[] = {"mean", "median", "p90", "p99"};
    for (int k = 0; k < 4; ++k) {
      const std::string label = mxs::strfmt("%s %s (ms)", name, stats[k]);
      row(label.c_str(), [&](const S& s) {
        const bench::Distribution& x = s.*d;
        if (x.count == 0) return std::string("-");
        const double v[] = {x.mean, x.median, x.p90, x.p99};
        return fmt(v[k]);
      });
    }
  };
  dist("TTFT", &S::ttft);
  dist("Time to first answer token", &S::ttfa);
  dist("TPOT", &S::tpot);
  dist("ITL", &S::itl);
  dist("E2E latency", &S::e2e);
}

void run(const ServeBenchArgs& a, const std::string& command) {
  bench::Target target = bench::parse_url(a.url);
  target.api_key = a.api_key;
  const bool chat = a.endpoint == "chat";
  const std::vector<int> levels = mxs::cli::parse_int_list(a.concurrency, "--concurrency", 1, 4096);
  const bench::Slo slo = a.goodput.empty() ? bench::Slo{} : bench::parse_goodput(a.goodput);
  std::string model = a.model;
  if (model.empty()) {
    const bench::SimpleResponse r = bench::http_request(target, "GET", "/v1/models", "", a.timeout_s);
    MXS_CHECK(r.status == 200, mxs::strfmt("GET %s/v1/models answered %d: %s (pass --model NAME)", a.url.c_str(),
                                           r.status, r.body.substr(0, 200).c_str()));
    try {
      model = json::parse(r.body).at("data").at(0).at("id").get<std::string>();
    } catch (const std::exception&) {
      throw mxs::Error(mxs::strfmt("GET %s/v1/models: no model id in the answer (pass --model NAME)", a.url.c_str()));
    }
  }
  std::vector<Item> items;
  std::mt19937_64 rng(a.seed);
  if (a.dataset == "random") {
    for (int i = 0; i < a.num_prompts; ++i) items.push_back({nullptr, random_prompt(rng, a.input_len), a.output_len});
  } else {
    items = load_jsonl(a.dataset, a.output_len);
  }
  std::vector<std::string> bodies;
  for (int i = 0; i < a.num_prompts; ++i)
    bodies.push_back(request_body(items[size_t(i) % items.size()], chat, model, a));

  bench::LoadOptions lo;
  lo.path = chat ? "/v1/chat/completions" : "/v1/completions";
  lo.request_rate = a.request_rate;
  lo.timeout_s = a.timeout_s;
  lo.seed = a.seed;
  std::printf("# mxserve bench serve: %s %s%s, model %s, %d prompts (%s, input ~%d, output %d tokens), %s\n\n",
              a.url.c_str(), target.base_path.c_str(), lo.path.c_str(), model.c_str(), a.num_prompts,
              a.dataset.c_str(), a.input_len, a.output_len,
              a.request_rate > 0 ? mxs::strfmt("Poisson arrivals at %.2f req/s", a.request_rate).c_str()
                                 : "requests sent as fast as concurrency allows");
  std::fflush(stdout);

  json out = {{"command", command},   {"url", a.url},          {"endpoint", lo.path},
              {"model", model},       {"dataset", a.dataset},  {"num_prompts", a.num_prompts},
              {"input_len", a.input_len}, {"output_len", a.output_len},
              {"request_rate", a.request_rate > 0 ? json(a.request_rate) : json(nullptr)},
              {"goodput_slo_ms", {{"ttft", slo.ttft_ms}, {"tpot", slo.tpot_ms}, {"e2el", slo.e2e_ms}}},
              {"levels", json::array()}};
  std::vector<bench::Summary> sums;
  std::vector<std::string> failures;
  for (int c : levels) {
    lo.concurrency = c;
    MXS_LOG_INFO("bench serve: concurrency %d, %d requests", c, a.num_prompts);
    const std::vector<bench::RequestRecord> records = bench::run_load(target, bodies, lo);
    sums.push_back(bench::summarize_run(records, slo));
    json level = bench::to_json(sums.back());
    level["concurrency"] = c;
    level["failures"] = json::array();
    for (size_t i = 0; i < records.size(); ++i) {
      if (records[i].ok) continue;
      level["failures"].push_back({{"index", i}, {"status", records[i].http_status}, {"error", records[i].error}});
      failures.push_back(mxs::strfmt("| %d | %zu | %d | %s |", c, i, records[i].http_status, records[i].error.c_str()));
    }
    out["levels"].push_back(std::move(level));
  }
  print_table(levels, sums, slo.ttft_ms > 0 || slo.tpot_ms > 0 || slo.e2e_ms > 0);
  if (!failures.empty()) {
    std::printf("\n## Failed requests\n\n| Concurrency | Request | HTTP status | Error |\n|---:|---:|---:|---|\n");
    const size_t shown = std::min<size_t>(failures.size(), 50);
    for (size_t i = 0; i < shown; ++i) std::printf("%s\n", failures[i].c_str());
    if (shown < failures.size()) std::printf("\n(%zu more in the JSON output)\n", failures.size() - shown);
  }
  if (!a.json_path.empty()) {
    mxs::write_file_atomic(a.json_path, out.dump(2) + "\n");
  }
}

mxs::cli::CommandRegistrar reg(65, [](CLI::App& app) {
  auto args = std::make_shared<ServeBenchArgs>();
  CLI::App* cmd = mxs::cli::bench_group(app).add_subcommand(
      "serve", "Load-test a running OpenAI-compatible server over HTTP (TTFT, TPOT, ITL, throughput, goodput)");
  cmd->add_option("--url", args->url, "Server base URL, http://HOST:PORT")->capture_default_str();
  cmd->add_option("--endpoint", args->endpoint, "chat (/v1/chat/completions) or completions (/v1/completions)")
      ->check(CLI::IsMember({"chat", "completions"}))
      ->capture_default_str();
  cmd->add_option("--temperature", args->temperature,
                  "Sampling temperature of every request (default 0, greedy, as vllm bench serve; the offline "
                  "`bench throughput` is greedy too)")
      ->check(CLI::Range(0.0, 2.0))
      ->capture_default_str();
  cmd->add_option("--response-format", args->response_format,
                  "text, or json_object: every request's answer constrained to one JSON object (structured outputs)")
      ->check(CLI::IsMember({"text", "json_object"}))
      ->capture_default_str();
  cmd->add_flag("--ignore-eos", args->ignore_eos,
                "Send ignore_eos: every request generates --output-len tokens (as `vllm bench serve --ignore-eos`; "
                "`bench throughput` always does)");
  cmd->add_option("--concurrency", args->concurrency, "Comma-separated levels of requests in flight; one run each")
      ->capture_default_str();
  cmd->add_option("--request-rate", args->request_rate, "Poisson arrivals at this many requests/s (default: no pacing)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--num-prompts", args->num_prompts, "Requests per concurrency level")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->add_option("--input-len", args->input_len, "Words per random prompt (about one token each)")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->add_option("--output-len", args->output_len, "max_tokens of each request")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->add_option("--dataset", args->dataset,
                  "random, or FILE.jsonl with one {\"prompt\": ...} or {\"messages\": [...]} per line")
      ->capture_default_str();
  cmd->add_option("--goodput", args->goodput, "SLOs in ms for goodput, e.g. ttft:500,tpot:50 (also e2el)");
  cmd->add_option("--model", args->model, "Model name to send (default: the first of GET /v1/models)");
  cmd->add_option("--api-key", args->api_key, "Bearer token (default: $MXSERVE_API_KEY)")->envname("MXSERVE_API_KEY");
  cmd->add_option("--json", args->json_path, "Also write the results as JSON to this file");
  cmd->add_option("--timeout", args->timeout_s, "Seconds one request may take before it is cut off and counted failed")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of the random prompts and arrival times")->capture_default_str();
  cmd->callback([args, cmd]() {
    const std::string command = mxs::cli::command_line("mxserve bench serve", *cmd, {"--api-key"});
    run(*args, command);
  });
});

}  // namespace
