# Homebrew formula for medic-cli (the `medic` operator CLI), published as Formula/medic-cli.rb in
# the tap medic-dev/homebrew-tap. This file is a template: the release workflow runs
# `packaging/homebrew/render-formula VERSION REPO_URL SHA256SUMS medic-cli`, which replaces the
# @...@ placeholders with the released version, the repository URL and the sums from SHA256SUMS.
# The archives hold the binary, its completions and its man pages (packaging/cli/assets).
class MedicCli < Formula
  desc "Medic operator CLI: services, alerts, scripts, runs and playbooks of a Medic server"
  homepage "@REPO_URL@"
  version "@VERSION@"
  license "Apache-2.0"

  on_macos do
    on_arm do
      url "@REPO_URL@/releases/download/agent-v#{version}/medic-cli-#{version}-aarch64-apple-darwin.tar.gz"
      sha256 "@SHA256_aarch64-apple-darwin@"
    end
    on_intel do
      url "@REPO_URL@/releases/download/agent-v#{version}/medic-cli-#{version}-x86_64-apple-darwin.tar.gz"
      sha256 "@SHA256_x86_64-apple-darwin@"
    end
  end

  on_linux do
    on_arm do
      url "@REPO_URL@/releases/download/agent-v#{version}/medic-cli-#{version}-aarch64-unknown-linux-musl.tar.gz"
      sha256 "@SHA256_aarch64-unknown-linux-musl@"
    end
    on_intel do
      url "@REPO_URL@/releases/download/agent-v#{version}/medic-cli-#{version}-x86_64-unknown-linux-musl.tar.gz"
      sha256 "@SHA256_x86_64-unknown-linux-musl@"
    end
  end

  def install
    bin.install "medic"
    bash_completion.install "completions/medic.bash" => "medic"
    zsh_completion.install "completions/_medic"
    fish_completion.install "completions/medic.fish"
    man1.install Dir["man/*.1.gz"]
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/medic --version")
    # No server configured: a usage error (exit 2) that says what is missing.
    output = shell_output("env -u MEDIC_URL HOME=#{testpath} XDG_CONFIG_HOME=#{testpath} #{bin}/medic health 2>&1", 2)
    assert_match "server", output
  end
end
