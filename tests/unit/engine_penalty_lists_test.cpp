// PenaltyLists: the lists equal those built from the whole history at every step, extend with new tokens only,
// rebuild when the history does not extend what they saw, and forget sequences a step leaves out.
#include "engine/penalty_lists.h"

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include <gtest/gtest.h>

namespace mxs {
namespace {

// The lists from scratch, as sets (the order of ids is not part of the contract).
void expect_lists(const PenaltyLists::Lists& l, const std::vector<int32_t>& prompt, const std::vector<int32_t>& output,
                  bool rep, bool out, int vocab) {
  std::set<int32_t> want_rep;
  std::map<int32_t, int32_t> want_out;
  for (const auto* v : {&prompt, &output})
    for (int32_t id : *v)
      if (rep && id >= 0 && id < vocab) want_rep.insert(id);
  for (int32_t id : output)
    if (out && id >= 0 && id < vocab) ++want_out[id];
  EXPECT_EQ(std::set<int32_t>(l.rep_ids.begin(), l.rep_ids.end()), want_rep);
  EXPECT_EQ(l.rep_ids.size(), want_rep.size()) << "repeated ids";
  std::map<int32_t, int32_t> got_out;
  ASSERT_EQ(l.out_ids.size(), l.out_counts.size());
  for (size_t k = 0; k < l.out_ids.size(); ++k) got_out[l.out_ids[k]] += l.out_counts[k];
  EXPECT_EQ(got_out, want_out);
  EXPECT_EQ(l.out_ids.size(), want_out.size()) << "repeated ids";
}

TEST(PenaltyLists, MatchFromScratchListsStepByStep) {
  PenaltyLists pl;
  const int vocab = 50;
  std::vector<int32_t> prompt = {3, 7, 7, 60, -1, 12, 3};  // (60 and -1: outside the vocabulary)
  std::vector<int32_t> a_out, b_out;
  for (int step = 0; step < 40; ++step) {
    expect_lists(pl.update(1, prompt, a_out, true, true, vocab), prompt, a_out, true, true, vocab);
    expect_lists(pl.update(2, {}, b_out, false, true, vocab), {}, b_out, false, true, vocab);
    pl.end_step();
    EXPECT_EQ(pl.size(), 2u);
    a_out.push_back(int32_t((step * 17) % 55));  // repeats, and some ids past the vocabulary
    b_out.push_back(int32_t(step % 4));
  }
}

TEST(PenaltyLists, RebuildWhenTheHistoryDoesNotExtendAndForgetWhatAStepLeavesOut) {
  PenaltyLists pl;
  const int vocab = 100;
  const std::vector<int32_t> prompt = {1, 2, 3};
  std::vector<int32_t> out = {5, 5, 6};
  pl.update(9, prompt, out, true, true, vocab);
  pl.end_step();
  // The same id, another history: a different output at the same length, then a shorter one, another prompt.
  std::vector<int32_t> other = {8, 8, 8};
  expect_lists(pl.update(9, prompt, other, true, true, vocab), prompt, other, true, true, vocab);
  other.resize(1);
  expect_lists(pl.update(9, prompt, other, true, true, vocab), prompt, other, true, true, vocab);
  const std::vector<int32_t> prompt3 = {1, 2, 3, 4};
  expect_lists(pl.update(9, prompt3, other, true, true, vocab), prompt3, other, true, true, vocab);
  expect_lists(pl.update(9, prompt3, other, false, true, vocab), prompt3, other, false, true, vocab);
  pl.end_step();
  EXPECT_EQ(pl.size(), 1u);
  pl.end_step();  // a step without sequence 9
  EXPECT_EQ(pl.size(), 0u);
}

}  // namespace
}  // namespace mxs
