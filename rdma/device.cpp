// Device-independent parts of the rdma/ interface.
#include "rdma/device.h"

namespace smcpre::rdma {

const char* to_string(WcStatus status) {
  switch (status) {
    case WcStatus::kSuccess:
      return "success";
    case WcStatus::kLocalLengthError:
      return "local length error";
    case WcStatus::kLocalProtectionError:
      return "local protection error";
    case WcStatus::kFlushError:
      return "work request flushed";
    case WcStatus::kRemoteAccessError:
      return "remote access error";
    case WcStatus::kRetryExceeded:
      return "transport retry counter exceeded";
    case WcStatus::kRnrRetryExceeded:
      return "RNR retry counter exceeded";
    case WcStatus::kGeneralError:
      return "general error";
  }
  return "unknown status";
}

}  // namespace smcpre::rdma
