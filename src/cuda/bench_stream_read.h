// `mxserve bench kernel stream-read`: the floor of a per-layer decode kernel. A CUDA graph chains `chain`
// launches (programmatic dependent launch, as the decode kernels are launched), each reading S bytes of its own
// buffer (the buffers rotate over >= 1 GB, so every launch reads DRAM) and doing nothing else: the time per
// launch is what any kernel that must stream S bytes of weights costs inside the decode chain, including its
// ramp, its tail and the launch. Two ways to read: `ldg` (256-thread CTAs, each thread's 8 x 16-byte loads all
// in flight, issued before griddep_wait) and `bulk` (one CTA per SM copies its whole share into shared memory
// with cp.async.bulk before griddep_wait; sizes up to ~220 KB per SM). Plus the chain of empty kernels (the
// launch cost alone). Compare a decode kernel's marginal cost (device-check's batch-1 table) with the row of
// its weight bytes: q/k/v 29.5 MB, o_proj 23.6, gate_up 35.3 (4 experts), down 17.6.
#pragma once
#include <string>
#include <vector>

namespace mxs::cuda {

struct BenchStreamReadOptions {
  std::vector<double> megabytes = {2.0, 17.6, 23.6, 29.5, 35.3};  // S per launch (10^6 bytes)
  int chain = 40;  // launches per graph
  int reps = 20;   // graph replays timed (after one untimed)
};

struct BenchStreamReadRow {
  double megabytes = 0;
  double us_ldg = 0;   // per launch
  double us_bulk = 0;  // per launch; 0 when a share does not fit one CTA's shared memory
};

struct BenchStreamReadResult {
  std::string device;
  int num_sms = 0;
  double copy_gb_s = 0;  // device-to-device copy, read + write counted
  double us_empty = 0;   // per launch of an empty kernel in the same kind of chain
  std::vector<BenchStreamReadRow> rows;
};

BenchStreamReadResult run_bench_stream_read(const BenchStreamReadOptions& options);

}  // namespace mxs::cuda
