# Homebrew formula for medic-agent, published as Formula/medic-agent.rb in the tap
# medic-dev/homebrew-tap. This file is a template: the release workflow runs
# packaging/homebrew/render-formula, which replaces the @...@ placeholders with the released
# version, the repository URL and the sums from SHA256SUMS.
class MedicAgent < Formula
  desc "Medic agent: heartbeats and approved remediation scripts for this host"
  homepage "@REPO_URL@"
  version "@VERSION@"
  license "Apache-2.0"

  on_macos do
    on_arm do
      url "@REPO_URL@/releases/download/agent-v#{version}/medic-agent-#{version}-aarch64-apple-darwin.tar.gz"
      sha256 "@SHA256_aarch64-apple-darwin@"
    end
    on_intel do
      url "@REPO_URL@/releases/download/agent-v#{version}/medic-agent-#{version}-x86_64-apple-darwin.tar.gz"
      sha256 "@SHA256_x86_64-apple-darwin@"
    end
  end

  on_linux do
    on_arm do
      url "@REPO_URL@/releases/download/agent-v#{version}/medic-agent-#{version}-aarch64-unknown-linux-musl.tar.gz"
      sha256 "@SHA256_aarch64-unknown-linux-musl@"
    end
    on_intel do
      url "@REPO_URL@/releases/download/agent-v#{version}/medic-agent-#{version}-x86_64-unknown-linux-musl.tar.gz"
      sha256 "@SHA256_x86_64-unknown-linux-musl@"
    end
  end

  def install
    bin.install "medic-agent"
    pkgshare.install "agent.toml.example"
    # The configuration lives in #{etc}/medic-agent/agent.toml; Homebrew keeps an edited copy
    # on upgrade (the new one lands beside it as agent.toml.default). Scripts work under var.
    example = (pkgshare/"agent.toml.example").read
    config = buildpath/"agent.toml"
    config.write example.sub(/^#work_dir = .*$/, "work_dir = \"#{var}/lib/medic-agent\"")
    (etc/"medic-agent").install config
  end

  def post_install
    (var/"lib/medic-agent").mkpath
    (var/"log").mkpath
  end

  def caveats
    <<~EOS
      Set server_url and the credential in #{etc}/medic-agent/agent.toml, then check it:
        medic-agent --config #{etc}/medic-agent/agent.toml check-config

      `brew services start medic-agent` runs the agent as you, from login.
      `sudo brew services start medic-agent` runs it as root from boot: agent.toml must then set
      run_as to an unprivileged account, which scripts run as.
    EOS
  end

  service do
    run [opt_bin/"medic-agent", "--config", etc/"medic-agent/agent.toml", "run"]
    # Restart after an error exit; launchd waits at least its ThrottleInterval (10 s) between
    # starts. A clean exit (stop requested) is not restarted.
    keep_alive successful_exit: false
    process_type :standard
    working_dir var/"lib/medic-agent"
    log_path var/"log/medic-agent.log"
    error_log_path var/"log/medic-agent.log"
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/medic-agent version")
    # A configuration without a credential is refused with exit 64 and says why.
    (testpath/"agent.toml").write "server_url = \"wss://medic.example.com\"\n"
    output = shell_output("#{bin}/medic-agent --config #{testpath}/agent.toml check-config 2>&1", 64)
    assert_match "credential", output
  end
end
