--- The action table: one row per IoT Platform operation (API version 2018-01-20).
-- Everything the client does per action is read from here: the HTTP method, whether a
-- repeat is harmless (retry class), parameter rules, and which
-- response fields are lists, integers and booleans (XML carries no types).
-- Adding an operation is adding a row.
--
-- The documented QPS per action lives with the pacer (`aliyun.iot.pacer.DEFAULT_LIMITS`).
-- Sources: docs/wire.md §4 (operations), the doc pages
-- D-69470 RegisterDevice, D-69473 BatchRegisterDevice, D-69482 BatchCheckDeviceNames,
-- D-69514 BatchRegisterDeviceWithApplyId, D-69483 QueryBatchRegisterDeviceStatus,
-- D-69518 QueryPageByApplyId, and the generated Tea client (TEAIOT) for the others.
-- @module aliyun.iot.actions

local M = {}

--- Parameter rule kinds understood by `aliyun.iot.validate`:
-- `key` a non-empty string without NUL, CR or LF (ProductKey, IotId, ...);
-- `text` any string without NUL, CR or LF (nicknames: the service enforces its own rule);
-- `device_name` `^[A-Za-z0-9_.:@-]{4,32}$`; `integer` with `min`/`max` (`max` may be
-- `"max_batch_size"`); `apply_id` a positive integer (int64);
-- `names` a list of device names, unique, at most `max` long;
-- `name_records` a list of `{DeviceName=, DeviceNickname=}`, unique names;
-- `keys` a list of `key` values;
-- `records` a list of tables (flattened `Name.N.Field`), at most `max`, whose fields are
-- those of `fields` (each a rule; `required` ones present).
-- @table rules

local common_lists = {}

-- The device of a single-device action: IotId, or ProductKey with DeviceName (IotId wins).
local function device_params(extra)
  local t = {IotId = {kind = "key"}, ProductKey = {kind = "key"}, DeviceName = {kind = "device_name"}}
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end
local device_one_of = {{"IotId"}, {"ProductKey", "DeviceName"}}
local group_device = {ProductKey = {kind = "key", required = true},
                      DeviceName = {kind = "device_name", required = true}}

local rows = {
  RegisterDevice = {
    -- A named registration can be resolved after an ambiguous failure (the name either
    -- exists or not); a random-named one cannot, so only named calls are re-sent.
    retry = "named",
    params = {
      ProductKey = {kind = "key", required = true},
      DeviceName = {kind = "device_name"},
      Nickname = {kind = "text"},
      DevEui = {kind = "key"}, PinCode = {kind = "key"}, JoinEui = {kind = "key"},
      AppKey = {kind = "key"}, LoraNodeType = {kind = "key"},
    },
  },
  BatchRegisterDevice = {
    -- Random names: a repeat creates a second batch, so it is never re-sent blindly.
    retry = "never",
    params = {
      ProductKey = {kind = "key", required = true},
      Count = {kind = "integer", required = true, min = 1, max = "max_batch_size"},
    },
    integers = {"Data.ApplyId"},
  },
  BatchCheckDeviceNames = {
    -- A repeated check creates no device.
    retry = "idempotent",
    params = {
      ProductKey = {kind = "key", required = true},
      DeviceName = {kind = "names", max = "max_batch_size"},
      DeviceNameList = {kind = "name_records", max = "max_batch_size"},
    },
    one_of = {{"DeviceName"}, {"DeviceNameList"}},
    integers = {"Data.ApplyId"},
    lists = {
      "Data.InvalidDeviceNameList.InvalidDeviceName",
      "Data.InvalidDeviceNicknameList.InvalidDeviceNickname",
      "Data.RepeatedDeviceNameList.RepeatDevieNameList", -- sic: the wire name (§4)
      "Data.InvalidDetailList.InvalidDetailList",
    },
  },
  BatchRegisterDeviceWithApplyId = {
    -- Never re-sent blindly: the service refuses a second registration of an apply that
    -- moved on, so a lost answer is settled with QueryBatchRegisterDeviceStatus instead
    -- (batch/named.lua).
    retry = "never",
    params = {
      ProductKey = {kind = "key", required = true},
      ApplyId = {kind = "apply_id", required = true},
    },
    integers = {"Data.ApplyId"},
  },
  QueryBatchRegisterDeviceStatus = {
    retry = "idempotent",
    params = {
      ProductKey = {kind = "key", required = true},
      ApplyId = {kind = "apply_id", required = true},
    },
    lists = {
      "Data.ValidList.Name", "Data.InvalidList.Name",
      "Data.InvalidDetailList.invalidDetailList", -- lower-case inner key on the wire (§4)
    },
  },
  QueryPageByApplyId = {
    retry = "idempotent",
    params = {
      ApplyId = {kind = "apply_id", required = true},
      PageSize = {kind = "integer", min = 1, max = 50},
      CurrentPage = {kind = "integer", min = 1},
    },
    integers = {"Page", "PageSize", "PageCount", "Total"},
    lists = {"ApplyDeviceList.ApplyDeviceInfo"},
  },
  QueryDeviceDetail = {
    retry = "idempotent",
    params = {
      IotId = {kind = "key"}, ProductKey = {kind = "key"}, DeviceName = {kind = "device_name"},
    },
    one_of = {{"IotId"}, {"ProductKey", "DeviceName"}},
    integers = {"Data.NodeType"},
    booleans = {"Data.Owner"},
  },
  QueryDevice = {
    retry = "idempotent",
    params = {
      ProductKey = {kind = "key", required = true},
      PageSize = {kind = "integer", min = 1, max = 50},
      CurrentPage = {kind = "integer", min = 1},
      NextToken = {kind = "key"},
    },
    integers = {"Page", "PageSize", "PageCount", "Total"},
    lists = {"Data.DeviceInfo"},
  },
  DeleteDevice = {
    -- A repeat finds the device gone (NotExistedDevice): it cannot delete twice.
    retry = "idempotent",
    params = {
      IotId = {kind = "key"}, ProductKey = {kind = "key"}, DeviceName = {kind = "device_name"},
    },
    one_of = {{"IotId"}, {"ProductKey", "DeviceName"}},
  },
  -- Fleet operations (docs/wire.md §10).
  BatchQueryDeviceDetail = {
    retry = "idempotent",
    params = {
      ProductKey = {kind = "key", required = true},
      DeviceName = {kind = "names", max = 100, required = true},
    },
    lists = {"Data.Data"},
    integers = {"Data.Data.NodeType"},
  },
  QueryDeviceProp = {
    retry = "idempotent",
    params = device_params(),
    one_of = device_one_of,
  },
  SaveDeviceProp = {
    -- Saving the same keys and values again leaves the same props.
    retry = "idempotent",
    params = device_params{Props = {kind = "text", required = true}},
    one_of = device_one_of,
  },
  DeleteDeviceProp = {
    -- Deleting a key that is already gone is no error and changes nothing.
    retry = "idempotent",
    params = device_params{PropKey = {kind = "key", required = true}},
    one_of = device_one_of,
  },
  CreateDeviceGroup = {
    -- A repeat makes a second group, or fails on the name taken: never re-sent blindly.
    retry = "never",
    params = {
      GroupName = {kind = "key", required = true},
      GroupDesc = {kind = "text"}, SuperGroupId = {kind = "key"},
    },
  },
  QueryDeviceGroupList = {
    retry = "idempotent",
    params = {
      GroupName = {kind = "text"}, SuperGroupId = {kind = "key"},
      PageSize = {kind = "integer", min = 1, max = 50},
      CurrentPage = {kind = "integer", min = 1},
    },
    integers = {"Page", "PageSize", "PageCount", "Total"},
    lists = {"Data.GroupInfo"},
  },
  BatchAddDeviceGroupRelations = {
    -- Adding a device already in the group counts it as already related, adds nothing.
    retry = "idempotent",
    params = {
      GroupId = {kind = "key", required = true},
      Device = {kind = "records", max = 200, required = true, fields = group_device},
    },
    integers = {"ValidDeviceCount", "SuccessAddedDeviceCount", "AlreadyRelatedGroupDeviceCount",
                "ExceedTenGroupDeviceCount"},
  },
  BatchDeleteDeviceGroupRelations = {
    -- Removing a device no longer in the group is no error.
    retry = "idempotent",
    params = {
      GroupId = {kind = "key", required = true},
      Device = {kind = "records", max = 200, required = true, fields = group_device},
    },
  },
  QueryDeviceListByDeviceGroup = {
    retry = "idempotent",
    params = {
      GroupId = {kind = "key", required = true},
      PageSize = {kind = "integer", min = 1, max = 50},
      CurrentPage = {kind = "integer", min = 1},
    },
    integers = {"Page", "PageSize", "PageCount", "Total"},
    lists = {"Data.SimpleDeviceInfo"},
  },
  BatchUpdateDeviceNickname = {
    -- Setting the same nicknames again leaves the same nicknames.
    retry = "idempotent",
    params = {
      DeviceNicknameInfo = {kind = "records", max = 50, required = true, fields = {
        ProductKey = {kind = "key"}, DeviceName = {kind = "device_name"}, IotId = {kind = "key"},
        Nickname = {kind = "text"},
      }},
    },
  },
  DisableThing = {
    -- Disabling a disabled device leaves it disabled.
    retry = "idempotent",
    params = device_params(),
    one_of = device_one_of,
  },
  EnableThing = {
    -- Enabling an enabled device leaves it enabled.
    retry = "idempotent",
    params = device_params(),
    one_of = device_one_of,
  },
  BatchGetDeviceState = {
    retry = "idempotent",
    params = {
      ProductKey = {kind = "key"},
      DeviceName = {kind = "names", max = 50},
      IotId = {kind = "keys", max = 50},
    },
    one_of = {{"IotId"}, {"ProductKey", "DeviceName"}},
    lists = {"DeviceStatusList.DeviceStatus"},
    integers = {"DeviceStatusList.DeviceStatus.Timestamp"}, -- Long, epoch ms (TEAIOT)
  },
}

--- Row for an action the table does not know (reachable through `client:call`): sent as
-- POST, any parameters (`open`), and never re-sent after an ambiguous failure, since
-- nothing says a repeat would be harmless.
M.unknown = {retry = "never", method = "POST", params = {}, open = true,
             lists = common_lists, integers = {}, booleans = {}}

for name, row in pairs(rows) do
  row.name = name
  row.method = row.method or "POST"
  row.lists = row.lists or common_lists
  row.integers = row.integers or {}
  row.booleans = row.booleans or {}
end

--- Every known action's row, by Action name.
M.rows = rows

--- Returns the row for an action name (the `unknown` row when not in the table).
-- @tparam string action e.g. "BatchRegisterDevice"
-- @treturn table row
function M.get(action)
  return rows[action] or M.unknown
end

--- snake_case method name of an action: BatchRegisterDevice -> batch_register_device.
-- @tparam string action
-- @treturn string
function M.method_name(action)
  return (action:gsub("(%l)(%u)", "%1_%2"):gsub("(%u)(%u%l)", "%1_%2"):lower())
end

return M
