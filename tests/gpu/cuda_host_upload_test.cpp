// copy_host_to_device (cuda/host_upload.h), the weight upload's parallel staging: every byte of many pieces of odd
// sizes lands at its odd offset, whatever the worker count and chunk size (pieces smaller than, equal to and a byte
// off a chunk, empty pieces); progress ends at the total and never goes back; a failing copy throws (no hang).
#include <gtest/gtest.h>

#include <vector>

#include "common/error.h"
#include "cuda/host_upload.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {
namespace {

TEST(HostUpload, EveryByteLandsWhateverTheWorkersAndChunks) {
  constexpr size_t kChunk = 4099;  // odd: chunks straddle everything
  const std::vector<size_t> sizes = {0,          1,          kChunk - 1, kChunk,     kChunk + 1, 3 * kChunk,
                                     7 * kChunk + 13, 100003, 5,          0,          65536,      12345};
  Rng rng(7);
  std::vector<std::vector<uint8_t>> src;
  size_t total = 0;
  for (size_t n : sizes) {
    src.push_back(random_bytes(n, rng));
    total += n;
  }
  for (int threads : {1, 3, 8}) {
    for (size_t chunk : {kChunk, size_t(1) << 20}) {
      // Destinations in one allocation, each at an odd offset after a gap that must stay untouched.
      DevBuf<uint8_t> dev(total + 3 * sizes.size() + 1);
      dev.poison();
      std::vector<HostToDeviceCopy> copies;
      std::vector<size_t> at;
      size_t off = 1;
      for (size_t i = 0; i < sizes.size(); ++i) {
        at.push_back(off);
        copies.push_back({dev.p + off, src[i].data(), sizes[i]});
        off += sizes[i] + 3;
      }
      HostUploadOptions o;
      o.threads = threads;
      o.chunk_bytes = chunk;
      size_t last = 0, calls = 0;
      bool monotonic = true;
      o.on_progress = [&](size_t done, size_t all) {
        EXPECT_EQ(all, total);
        monotonic = monotonic && done >= last;
        last = done;
        ++calls;
      };
      copy_host_to_device(copies, o);
      EXPECT_TRUE(monotonic);
      EXPECT_GE(calls, 1u);
      EXPECT_EQ(last, total) << "the last progress call reports every byte";
      const std::vector<uint8_t> got = dev.download();
      for (size_t i = 0; i < sizes.size(); ++i) {
        ASSERT_EQ(0, std::memcmp(got.data() + at[i], src[i].data(), sizes[i]))
            << "piece " << i << " (" << sizes[i] << " bytes), " << threads << " threads, chunk " << chunk;
        ASSERT_EQ(got[at[i] + sizes[i]], 0xFF) << "the byte after piece " << i << " was written";
      }
      EXPECT_EQ(got[0], 0xFF);
    }
  }
}

TEST(HostUpload, NothingToCopy) {
  size_t calls = 0;
  HostUploadOptions o;
  o.on_progress = [&](size_t done, size_t all) {
    EXPECT_EQ(done, 0u);
    EXPECT_EQ(all, 0u);
    ++calls;
  };
  copy_host_to_device({}, o);
  EXPECT_EQ(calls, 1u);
}

TEST(HostUpload, AFailingCopyThrowsAfterTheWorkersStop) {
  // A destination that is no device memory (nor mapped host memory): cudaMemcpyAsync refuses it.
  std::vector<uint8_t> src(1 << 16, 1);
  DevBuf<uint8_t> dev(src.size());
  std::vector<HostToDeviceCopy> copies = {{dev.p, src.data(), src.size()},
                                          {reinterpret_cast<void*>(uintptr_t(0x1000)), src.data(), src.size()},
                                          {dev.p, src.data(), src.size()}};
  HostUploadOptions o;
  o.threads = 2;
  o.chunk_bytes = 4096;
  EXPECT_THROW(copy_host_to_device(copies, o), Error);
  // The device is still usable afterwards.
  copy_host_to_device({{dev.p, src.data(), src.size()}});
  EXPECT_EQ(dev.download(), src);
}

}  // namespace
}  // namespace mxs::cuda::test
