/* placeholder: being written */
#include "bus/bus.h"
