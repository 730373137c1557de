# Sourced by the MPI test scripts (test_mpi.sh, test_mpi_transport.sh,
# test_mpi_netns.sh) after they set build and have_mpi: skips (exit 77, saying
# why) where this build has no MPI or mpirun is absent, and sets bin, mk and
# mpirun.  mpi_local then sets up launches on this machine: Open MPI's settings
# for containers and the sanitizer build, and MPI=(mpirun -np 2 ...).
bin="$build/alphaspin"
mk="$build/tests/cli/write_tiny_model"
case "$have_mpi" in ON | on | TRUE | true | 1) ;; *) echo "SKIP: this build has no MPI (cmake found none, or -DALPHASPIN_MPI=OFF)"; exit 77 ;; esac
mpirun=$(command -v mpirun || true)
[ -n "$mpirun" ] || { echo "SKIP: mpirun absent (scripts/install_deps.sh installs Open MPI)"; exit 77; }

mpi_local() {
  # Open MPI in containers: no cross-memory attach (ptrace is often denied), no binding.
  export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl='^openib'
  # The sanitizer build (scripts/test.sh): Open MPI's own allocations would read as leaks.
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
  MPI=("$mpirun" -np 2 --oversubscribe --allow-run-as-root --bind-to none)
}
