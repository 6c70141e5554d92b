export default {
  testEnvironment: "node",
  // The CLI's modules keep process-wide state (signal handlers, emitters on `process`) that a test
  // file in the same worker reuses; Jest 30's soft-deleting of globals between files broke that
  // (a stack overflow in its setter after the first file), so it is off.
  testEnvironmentOptions: { globalsCleanup: "off" },
  transform: {
    "^.+\\.(t|j)sx?$": [
      "@swc/jest",
      { jsc: { parser: { syntax: "typescript" }, target: "es2022" } },
    ],
  },
  extensionsToTreatAsEsm: [".ts"],
  moduleNameMapper: { "^(\\.{1,2}/.*)\\.js$": "$1" },
  testMatch: ["<rootDir>/test/**/*.test.ts"],
  testTimeout: 60000,
};
