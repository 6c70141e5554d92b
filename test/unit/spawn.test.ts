import path from "node:path";
import { AGENT_ROOT, agentEnv } from "../../src/agent/spawn.js";

describe("the agent's environment", () => {
  test("OpenMP waits passively after a short libgomp spin unless the user chose a wait", () => {
    const env = agentEnv({ PATH: "/usr/bin" }, false);
    expect(env.OMP_WAIT_POLICY).toBe("PASSIVE");
    expect(env.GOMP_SPINCOUNT).toBe("3000");
    expect(env.PATH).toBe("/usr/bin");
  });

  test.each(["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"])(
    "a user's %s keeps every OpenMP wait setting as the user left it",
    (name) => {
      const env = agentEnv({ [name]: "7" }, false);
      expect(env[name]).toBe("7");
      for (const other of ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"])
        if (other !== name) expect(env[other]).toBeUndefined();
    },
  );

  test("the agent's package comes first on PYTHONPATH, before the user's", () => {
    const env = agentEnv({ PYTHONPATH: "/mine" }, false);
    expect(env.PYTHONPATH).toBe([AGENT_ROOT, "/mine"].join(path.delimiter));
    expect(agentEnv({}, false).PYTHONPATH).toBe(AGENT_ROOT);
  });

  test("only a standby agent gets TORCHLENS_AGENT_STANDBY, whatever the CLI's environment held", () => {
    expect(agentEnv({}, true).TORCHLENS_AGENT_STANDBY).toBe("1");
    expect(
      agentEnv({ TORCHLENS_AGENT_STANDBY: "1" }, false).TORCHLENS_AGENT_STANDBY,
    ).toBeUndefined();
  });
});
