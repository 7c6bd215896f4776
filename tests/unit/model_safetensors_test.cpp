// safetensors reader/writer: round trip, every bad-input case of issue 2 (each its own test, the message must name
// the file and the tensor), sharded folders through the index, and a bounded fuzz test of the header parser.
#include <chrono>
#include <cstring>
#include <random>

#include "model/safetensors.h"
#include "model_test_util.h"

namespace mxs {
namespace {

using test::expect_error;
using test::TempDir;
using test::write_raw_safetensors;

TEST(Safetensors, WriterReaderRoundTrip) {
  TempDir tmp;
  const std::string path = tmp / "a.safetensors";
  std::vector<uint16_t> a(6);
  for (size_t i = 0; i < a.size(); ++i) a[i] = uint16_t(0x3f80 + i);
  std::vector<uint8_t> b = {1, 2, 3};
  {
    SafetensorsWriter w(path, {{"a", DType::kBF16, {2, 3}}, {"b", DType::kU8, {3}}, {"empty", DType::kF32, {0, 4}}},
                        {{"format", "pt"}});
    w.write_tensor("a", a.data(), a.size() * 2);
    w.write_tensor_part("b", b.data(), 1);
    w.write_tensor_part("b", b.data() + 1, 2);
    w.write_tensor("empty", nullptr, 0);
    w.close();
  }
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  const TensorView& ta = f->tensors().at("a");
  EXPECT_EQ(ta.dtype, DType::kBF16);
  EXPECT_EQ(ta.shape_str(), "[2, 3]");
  EXPECT_EQ(ta.numel(), 6);
  ASSERT_EQ(ta.nbytes, 12u);
  EXPECT_EQ(std::memcmp(ta.data, a.data(), 12), 0);
  EXPECT_EQ(std::memcmp(f->tensors().at("b").data, b.data(), 3), 0);
  EXPECT_EQ(f->tensors().at("empty").nbytes, 0u);
  // The data region starts 8-byte aligned.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ta.data) % 8, 0u);
}

TEST(Safetensors, WriterRejectsWrongOrderAndSize) {
  TempDir tmp;
  SafetensorsWriter w(tmp / "w.safetensors", {{"a", DType::kF32, {2}}, {"b", DType::kF32, {1}}});
  float x[2] = {1, 2};
  expect_error([&] { w.write_tensor("b", x, 4); }, {"b", "out of order"});
  expect_error([&] { w.write_tensor("a", x, 4); }, {"a", "expected 8"});
  w.write_tensor("a", x, 8);
  expect_error([&] { w.close(); }, {"closed after 1 of 2"});
}

TEST(Safetensors, DTypeNames) {
  DType d;
  for (const char* name : {"BF16", "F16", "F32", "F64", "U8", "I8", "I16", "I32", "I64", "BOOL", "F8_E4M3", "F8_E5M2",
                           "U16", "U32", "U64", "F8_E8M0"}) {
    ASSERT_TRUE(dtype_from_name(name, &d)) << name;
    EXPECT_STREQ(dtype_name(d), name);
  }
  EXPECT_FALSE(dtype_from_name("FP4", &d));
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kI64), 8u);
}

// ---- bad input, one test each

TEST(SafetensorsBadInput, TruncatedShard) {
  TempDir tmp;
  const std::string path = tmp / "model-00001-of-00002.safetensors";
  {
    SafetensorsWriter w(path, {{"x.weight", DType::kBF16, {4, 8}}, {"y.weight", DType::kBF16, {4, 8}}});
    std::vector<uint8_t> z(64);
    w.write_tensor("x.weight", z.data(), z.size());
    w.write_tensor("y.weight", z.data(), z.size());
    w.close();
  }
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);  // an interrupted download
  expect_error([&] { SafetensorsFile::open(path); },
               {"model-00001-of-00002.safetensors", "y.weight", "outside the data", "truncated"});
}

TEST(SafetensorsBadInput, FileShorterThanLengthField) {
  TempDir tmp;
  const std::string path = tmp / "short.safetensors";
  write_file_atomic(path, "abc");
  expect_error([&] { SafetensorsFile::open(path); }, {"short.safetensors", "too short"});
}

TEST(SafetensorsBadInput, HeaderLengthLargerThanFile) {
  TempDir tmp;
  const std::string path = tmp / "big.safetensors";
  write_raw_safetensors(path, "{}", 16, /*header_len_override=*/4096);
  expect_error([&] { SafetensorsFile::open(path); }, {"big.safetensors", "header length 4096", "larger than the file"});
}

TEST(SafetensorsBadInput, HeaderLengthOverLimit) {
  TempDir tmp;
  const std::string path = tmp / "huge.safetensors";
  write_raw_safetensors(path, "{}", 0, /*header_len_override=*/uint64_t(1) << 40);
  expect_error([&] { SafetensorsFile::open(path); }, {"huge.safetensors", "100 MB"});
}

TEST(SafetensorsBadInput, InvalidJsonHeader) {
  TempDir tmp;
  const std::string path = tmp / "json.safetensors";
  write_raw_safetensors(path, R"({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]})", 4);  // missing }
  expect_error([&] { SafetensorsFile::open(path); }, {"json.safetensors", "not valid JSON"});
}

TEST(SafetensorsBadInput, HeaderNotAnObject) {
  TempDir tmp;
  const std::string path = tmp / "list.safetensors";
  write_raw_safetensors(path, "[1, 2]", 0);
  expect_error([&] { SafetensorsFile::open(path); }, {"list.safetensors", "must be a JSON object"});
}

TEST(SafetensorsBadInput, OffsetsOutsideTheData) {
  TempDir tmp;
  const std::string path = tmp / "out.safetensors";
  write_raw_safetensors(path, R"({"a.bias": {"dtype": "BF16", "shape": [4], "data_offsets": [8, 16]}})", 12);
  expect_error([&] { SafetensorsFile::open(path); }, {"out.safetensors", "a.bias", "outside the data"});
}

TEST(SafetensorsBadInput, OverlappingOffsets) {
  TempDir tmp;
  const std::string path = tmp / "overlap.safetensors";
  write_raw_safetensors(path,
                        R"({"first": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                            "second": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})",
                        24);
  expect_error([&] { SafetensorsFile::open(path); }, {"overlap.safetensors", "first", "second", "overlap"});
}

TEST(SafetensorsBadInput, BeginAfterEnd) {
  TempDir tmp;
  const std::string path = tmp / "order.safetensors";
  write_raw_safetensors(path, R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [8, 4]}})", 8);
  expect_error([&] { SafetensorsFile::open(path); }, {"order.safetensors", "w", "begin > end"});
}

TEST(SafetensorsBadInput, UnknownDtype) {
  TempDir tmp;
  const std::string path = tmp / "dtype.safetensors";
  write_raw_safetensors(path, R"({"experts.blocks": {"dtype": "FP4", "shape": [8], "data_offsets": [0, 4]}})", 4);
  expect_error([&] { SafetensorsFile::open(path); }, {"dtype.safetensors", "experts.blocks", "unknown dtype \"FP4\""});
}

TEST(SafetensorsBadInput, ByteSizeDiffersFromShape) {
  TempDir tmp;
  const std::string path = tmp / "size.safetensors";
  write_raw_safetensors(path, R"({"w": {"dtype": "BF16", "shape": [3, 3], "data_offsets": [0, 16]}})", 16);
  expect_error([&] { SafetensorsFile::open(path); }, {"size.safetensors", "w", "needs 18 bytes", "span 16"});
}

TEST(SafetensorsBadInput, ShapeOverflow) {
  TempDir tmp;
  const std::string path = tmp / "overflow.safetensors";
  write_raw_safetensors(
      path, R"({"w": {"dtype": "F64", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 0]}})", 0);
  expect_error([&] { SafetensorsFile::open(path); }, {"overflow.safetensors", "w"});
}

TEST(SafetensorsBadInput, MissingFields) {
  TempDir tmp;
  const std::string path = tmp / "fields.safetensors";
  write_raw_safetensors(path, R"({"w": {"dtype": "BF16", "shape": [2]}})", 4);
  expect_error([&] { SafetensorsFile::open(path); }, {"fields.safetensors", "w", "data_offsets"});
  write_raw_safetensors(path, R"({"w": {"dtype": "BF16", "shape": [-2], "data_offsets": [0, 4]}})", 4);
  expect_error([&] { SafetensorsFile::open(path); }, {"fields.safetensors", "w", "non-negative"});
}

TEST(SafetensorsBadInput, IndexNamesMissingShard) {
  TempDir tmp;
  {
    SafetensorsWriter w(tmp / "model-00001-of-00002.safetensors", {{"a", DType::kU8, {1}}});
    uint8_t x = 1;
    w.write_tensor("a", &x, 1);
    w.close();
  }
  write_file_atomic(tmp / "model.safetensors.index.json",
                    R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                       "b": "model-00002-of-00002.safetensors"}})");
  expect_error([&] { SafetensorsCheckpoint::open_dir(tmp.path()); },
               {"model.safetensors.index.json", "model-00002-of-00002.safetensors", "b", "does not exist"});
}

TEST(SafetensorsBadInput, IndexNamesTensorAbsentFromShard) {
  TempDir tmp;
  {
    SafetensorsWriter w(tmp / "model-00001-of-00001.safetensors", {{"a", DType::kU8, {1}}});
    uint8_t x = 1;
    w.write_tensor("a", &x, 1);
    w.close();
  }
  write_file_atomic(tmp / "model.safetensors.index.json",
                    R"({"weight_map": {"a": "model-00001-of-00001.safetensors",
                                       "lm_head.weight": "model-00001-of-00001.safetensors"}})");
  expect_error([&] { SafetensorsCheckpoint::open_dir(tmp.path()); },
               {"model.safetensors.index.json", "lm_head.weight", "model-00001-of-00001.safetensors", "no such tensor"});
}

TEST(SafetensorsBadInput, TensorInTwoFilesWithoutIndex) {
  TempDir tmp;
  for (const char* name : {"a.safetensors", "b.safetensors"}) {
    SafetensorsWriter w(tmp / name, {{"dup", DType::kU8, {1}}});
    uint8_t x = 1;
    w.write_tensor("dup", &x, 1);
    w.close();
  }
  expect_error([&] { SafetensorsCheckpoint::open_dir(tmp.path()); }, {"dup", "a.safetensors", "b.safetensors"});
}

TEST(Safetensors, ShardedFolderThroughIndex) {
  TempDir tmp;
  for (int s = 0; s < 2; ++s) {
    const std::string name = strfmt("t%d", s);
    SafetensorsWriter w(tmp / strfmt("model-%05d-of-00002.safetensors", s + 1), {{name, DType::kI32, {1}}});
    int32_t v = 100 + s;
    w.write_tensor(name, &v, 4);
    w.close();
  }
  write_file_atomic(tmp / "model.safetensors.index.json",
                    R"({"metadata": {"total_size": 8}, "weight_map": {"t0": "model-00001-of-00002.safetensors",
                                                                      "t1": "model-00002-of-00002.safetensors"}})");
  auto ck = SafetensorsCheckpoint::open_dir(tmp.path());
  EXPECT_EQ(ck->files().size(), 2u);
  EXPECT_EQ(ck->total_bytes(), 8u);
  ASSERT_NE(ck->find("t1"), nullptr);
  int32_t v;
  std::memcpy(&v, ck->find("t1")->data, 4);
  EXPECT_EQ(v, 101);
  EXPECT_EQ(ck->find("t2"), nullptr);
}

// ---- fuzz: random and mutated headers never crash; each either parses or throws mxs::Error. Bounded to ~2 s.

std::string random_header(std::mt19937_64& rng) {
  static const char* kDTypes[] = {"BF16", "U8", "F32", "I64", "FP4", "", "bf16", "F8_E8M0"};
  auto num = [&]() -> std::string {
    switch (rng() % 8) {
      case 0: return "-1";
      case 1: return "1.5";
      case 2: return "18446744073709551615";
      case 3: return "\"3\"";
      case 4: return "null";
      default: return std::to_string(rng() % 64);
    }
  };
  std::string h = "{";
  const int n = int(rng() % 5);
  for (int i = 0; i < n; ++i) {
    if (i) h += ",";
    h += "\"t" + std::to_string(rng() % 4) + "\":{\"dtype\":\"" + kDTypes[rng() % 8] + "\",\"shape\":[";
    const int dims = int(rng() % 4);
    for (int d = 0; d < dims; ++d) h += (d ? "," : "") + num();
    h += "],\"data_offsets\":[" + num() + "," + num() + "]}";
  }
  if (rng() % 4 == 0) h += std::string(n ? "," : "") + "\"__metadata__\":{\"format\":" + (rng() % 2 ? "\"pt\"" : "1") + "}";
  return h + "}";
}

TEST(SafetensorsFuzz, RandomAndMutatedHeaders) {
  TempDir tmp;
  const std::string path = tmp / "fuzz.safetensors";
  std::mt19937_64 rng(12345);
  const auto start = std::chrono::steady_clock::now();
  int parsed = 0, rejected = 0, cases = 0;
  for (; cases < 3000; ++cases) {
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(2)) break;
    std::string header = random_header(rng);
    // Mutations: flip bytes, cut, or insert junk.
    const int mutations = int(rng() % 3);
    for (int m = 0; m < mutations && !header.empty(); ++m) {
      const size_t at = rng() % header.size();
      switch (rng() % 3) {
        case 0: header[at] = char(rng() % 256); break;
        case 1: header.resize(at); break;
        default: header.insert(at, 1, "{}[],:\"0"[rng() % 8]); break;
      }
    }
    const size_t data = rng() % 80;
    uint64_t len_override = 0;
    if (rng() % 16 == 0) len_override = rng() % (header.size() + data + 16) + 1;
    write_raw_safetensors(path, header, data, len_override);
    try {
      auto f = SafetensorsFile::open(path);
      for (const auto& [name, t] : f->tensors()) {
        // A valid parse must describe readable bytes inside the mapping (a bad offset would fault here).
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < t.nbytes; ++i) sink = sink ^ t.data[i];
        ASSERT_EQ(t.nbytes, size_t(t.numel()) * dtype_size(t.dtype)) << header;
      }
      ++parsed;
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(cases, 200);
  EXPECT_GT(parsed, 0);    // the generator does produce valid headers
  EXPECT_GT(rejected, 0);  // and invalid ones
}

}  // namespace
}  // namespace mxs
