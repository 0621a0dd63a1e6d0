#include "core/wire/llc_types.h"

namespace smcpre::core::llc {

const char* type_name(Type type) {
  switch (type) {
    case Type::kUnknown:
      return "UNKNOWN";
    case Type::kConfirmLink:
      return "CONFIRM_LINK";
    case Type::kAddLink:
      return "ADD_LINK";
    case Type::kAddLinkCont:
      return "ADD_LINK_CONT";
    case Type::kDeleteLink:
      return "DELETE_LINK";
    case Type::kReqAddLink:
      return "REQ_ADD_LINK";
    case Type::kConfirmRkey:
      return "CONFIRM_RKEY";
    case Type::kTestLink:
      return "TEST_LINK";
    case Type::kConfirmRkeyCont:
      return "CONFIRM_RKEY_CONT";
    case Type::kDeleteRkey:
      return "DELETE_RKEY";
    case Type::kCdc:
      return "CDC";
  }
  return "UNKNOWN";
}

}  // namespace smcpre::core::llc
