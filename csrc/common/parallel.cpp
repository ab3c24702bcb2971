#include "common/parallel.h"

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "common/limits.h"

#if defined(__linux__)
#include <sched.h>
#endif

namespace mbexport {

int UsableCpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

size_t WorkerCount(size_t n, int64_t threads, size_t grain) {
  const size_t cpus = static_cast<size_t>(UsableCpus());
  const size_t wanted = threads <= 0 ? cpus : std::min(cpus, static_cast<size_t>(threads));
  const size_t chunks = grain == 0 ? n : n / grain + (n % grain != 0);
  return std::max<size_t>(1, std::min(wanted, chunks));
}

namespace detail {

Status RunWorkers(size_t workers, const std::function<void(size_t)>& body, std::atomic<bool>* stop,
                  const std::string& where) {
  std::mutex mu;
  std::exception_ptr first;
  auto guarded = [&](size_t worker) {
    try {
      body(worker);
    } catch (...) {
      stop->store(true);
      std::lock_guard<std::mutex> lock(mu);
      if (!first) first = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  try {
    pool.reserve(workers - 1);
  } catch (const std::exception&) {
    workers = 1;  // not even the bookkeeping fits: run on the calling thread
  }
  for (size_t w = 1; w < workers; ++w) {
    try {
      pool.emplace_back(guarded, w);
    } catch (const std::exception&) {  // std::system_error (EAGAIN) or bad_alloc for its state
      break;  // the OS refused a thread: the ones running (and this one) do the work
    }
  }
  guarded(0);
  for (std::thread& t : pool) t.join();
  return first ? StatusFromException(first, where) : Status::Ok();
}

}  // namespace detail

}  // namespace mbexport
