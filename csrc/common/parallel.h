// ParallelFor: one loop over [0, n) spread over worker threads that pull chunks with
// an atomic index (results land at the item's position, so the thread count never
// changes the output).
//
// Robust by construction, because the thread count and the work come from callers:
//   - workers = min(threads, UsableCpus(), chunks): asking for 5000 threads on 2 CPUs
//     starts 2; threads <= 0 means UsableCpus();
//   - a thread the OS refuses (EAGAIN under `ulimit -v`, a thread limit) is skipped: the
//     workers already running, down to the calling thread alone, finish the work;
//   - an exception thrown by the body (std::bad_alloc, ...) stops the other workers at
//     their next chunk and, once every thread has joined, comes back as a Status
//     (StatusFromException): nothing unwinds over a joinable std::thread.
//
// Example:
//   const size_t workers = WorkerCount(items.size(), threads, 16);
//   std::vector<Scratch> scratch(workers);
//   Status st = ParallelFor(items.size(), workers, 16, "tokenizing",
//                           [&](size_t begin, size_t end, size_t worker) { ... scratch[worker] ... });
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <functional>
#include <string>

#include "common/status.h"

namespace mbexport {

// The CPUs this process may run on (affinity mask: containers, taskset), at least 1.
int UsableCpus();

// Workers ParallelFor uses for n items in chunks of `grain`: min(threads, UsableCpus(),
// chunks), at least 1 (threads <= 0: UsableCpus()).
size_t WorkerCount(size_t n, int64_t threads, size_t grain);

namespace detail {
// Runs body(w) for w in [0, workers): w = 0 on the calling thread, the others on new
// threads (fewer when the OS refuses some). The first exception sets *stop; all threads
// are joined before it is returned as a Status.
Status RunWorkers(size_t workers, const std::function<void(size_t)>& body, std::atomic<bool>* stop,
                  const std::string& where);
}  // namespace detail

// fn(begin, end, worker) for consecutive chunks [begin, end) of at most `grain` items;
// worker < workers indexes per-worker state. `where` names the work in error messages.
template <typename Fn>
Status ParallelFor(size_t n, size_t workers, size_t grain, const std::string& where, Fn fn) {
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  return detail::RunWorkers(
      std::max<size_t>(1, workers),
      [&](size_t worker) {
        while (!stop.load(std::memory_order_relaxed)) {
          const size_t begin = next.fetch_add(grain);
          if (begin >= n) break;
          fn(begin, std::min(n, begin + grain), worker);
        }
      },
      &stop, where);
}

}  // namespace mbexport
