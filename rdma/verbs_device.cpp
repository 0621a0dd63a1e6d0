// The rdma-core (libibverbs) device. For now it only probes for RDMA devices, so that
// SMCPRE_DEVICE=auto can tell "no RDMA here" from "not implemented"; the QP, MR and CQ
// implementation is a later step.
#include <infiniband/verbs.h>

#include <cstring>
#include <string>

#include "rdma/device.h"

namespace smcpre::rdma {

std::unique_ptr<Device> open_verbs_device(const std::string& name, int port, std::string* error) {
  (void)port;
  int count = 0;
  ibv_device** list = ::ibv_get_device_list(&count);
  if (list == nullptr || count == 0) {
    if (list != nullptr) ::ibv_free_device_list(list);
    *error = "no RDMA device found";
    return nullptr;
  }
  bool found = name.empty();
  for (int i = 0; i < count && !found; ++i) {
    const char* dev_name = ::ibv_get_device_name(list[i]);
    found = dev_name != nullptr && name == dev_name;
  }
  ::ibv_free_device_list(list);
  *error = found ? "verbs device not implemented yet" : "RDMA device " + name + " not found";
  return nullptr;
}

}  // namespace smcpre::rdma
