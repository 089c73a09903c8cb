# Source this to get the environment the scripts use (tools under $CASCADE_HOME, the cargo target
# folder outside the checkout, libtorch from the venv):  source scripts/env.sh
_cascade_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=setup.sh
source "$_cascade_root/scripts/setup.sh"
export_env
